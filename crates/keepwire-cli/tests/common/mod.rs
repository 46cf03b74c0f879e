//! Starting the real `keepwire` binary in tests: one helper for every CLI
//! test file (serve, proxy, check): a child that is killed by PID when
//! dropped, whose bound address is read from its first stderr line, with
//! every wait bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Whether this test runs as root (the lab's namespaces, `runuser`).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips the test (with the reason printed) unless running as root.
#[allow(unused_macros)]
macro_rules! need_root {
    () => {
        if !common::is_root() {
            eprintln!("SKIP: the lab's network namespaces need root");
            return;
        }
    };
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_keepwire");
/// Bound on any single wait (a first log line, a read, a child's exit).
pub const WAIT: Duration = Duration::from_secs(10);

/// A port that was free a moment ago (for a listener the test cannot ask
/// the child for, such as a checker's origin or an `--admin` address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `keepwire` child, killed (by its PID) when dropped.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    pub first_line: String,
    /// The stderr lines after the first, as they come.
    pub lines: mpsc::Receiver<String>,
}

impl Running {
    /// The first later stderr line that contains `needle`, waiting at most
    /// [`WAIT`] in all.
    pub fn line_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no stderr line with {needle:?} within {WAIT:?} ({e})"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The certificate PEM a `--tls-self-signed` child said it wrote (read
/// from its later stderr lines).
pub fn self_signed_pem(child: &Running) -> std::path::PathBuf {
    let note = child.line_with("self-signed certificate in ");
    note.split("self-signed certificate in ")
        .nth(1)
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("no path in {note:?}"))
        .into()
}

/// A [`Running`] with `--tls-self-signed`: the child is killed (SIGKILL, so
/// it cannot clean up) and then its PEM's directory removed.
pub struct TlsRunning {
    pub run: Running,
    pub pem: std::path::PathBuf,
}

impl std::ops::Deref for TlsRunning {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.run
    }
}

impl std::ops::DerefMut for TlsRunning {
    fn deref_mut(&mut self) -> &mut Running {
        &mut self.run
    }
}

impl Drop for TlsRunning {
    fn drop(&mut self) {
        let _ = self.run.child.kill();
        let _ = self.run.child.wait();
        let _ = std::fs::remove_file(&self.pem);
        if let Some(dir) = self.pem.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// `keepwire serve --listen 127.0.0.1:0 --threads 1 ARGS`, started as
/// [`start`] does.
pub fn serve(args: &[&str]) -> Running {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--threads", "1"];
    all.extend_from_slice(args);
    start(&all)
}

/// Starts `keepwire ARGS` and reads the bound address from its first stderr
/// line with `listening on http://ADDR/` (or `https://`), waiting at most [`WAIT`].
pub fn start(args: &[&str]) -> Running {
    start_env(args, &[])
}

/// [`start`] with extra environment variables.
pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the keepwire binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Notes (a deprecated flag) may come before the address.
    let deadline = std::time::Instant::now() + WAIT;
    let next = || rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    let first_line = match std::iter::from_fn(|| Some(next()))
        .find(|l| l.as_ref().map_or(true, |l| l.contains("listening on")))
        .expect("from_fn never ends")
    {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("keepwire {args:?} printed no address within {WAIT:?} ({e}); exit: {status:?}");
        }
    };
    let addr = first_line
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok());
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no address in the first stderr line {first_line:?}");
    };
    Running {
        child,
        addr,
        first_line,
        lines: rx,
    }
}

/// Runs `keepwire ARGS` to completion and collects its output; the child is
/// killed (and the test fails) if it outlives `limit`.
pub fn run(args: &[&str], limit: Duration) -> Output {
    run_env(args, &[], limit)
}

/// [`run`] with extra environment variables.
pub fn run_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).envs(env.iter().copied());
    run_command(cmd, limit)
}

/// Runs `cmd` (stdin empty) to completion as [`run`] does.
pub fn run_command(mut cmd: Command, limit: Duration) -> Output {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keepwire binary starts");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keepwire {args:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// A running nginx, killed (by its PID) when dropped, with its prefix
/// directory (config, logs, temp files) removed after it.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    /// The prefix directory (its `www` is the document root).
    pub dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether python3 can import `module` (a peer's library); `false` (after
/// saying so) if it cannot and `KEEPWIRE_SKIP_PEERS=1`, a panic otherwise.
pub fn python_module(module: &str) -> bool {
    let has = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        if std::env::var("KEEPWIRE_SKIP_PEERS").as_deref() == Ok("1") {
            eprintln!("skipping: python3 with `{module}` is missing");
            return false;
        }
        panic!("python3 with `{module}` is missing: `bash scripts/test` installs it");
    }
    true
}

/// nginx's path; `None` (skip) if it is missing and `KEEPWIRE_SKIP_PEERS=1`,
/// a panic if it is missing otherwise.
pub fn find_nginx() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("KEEPWIRE_SKIP_PEERS").as_deref() == Ok("1") {
            eprintln!("skipped: nginx is not installed (KEEPWIRE_SKIP_PEERS=1)");
            return None;
        }
        panic!(
            "nginx is not installed: `bash scripts/test` installs it (or set KEEPWIRE_SKIP_PEERS=1)"
        );
    }
    found
}

/// nginx in the foreground (one worker, no master) with one `server` block:
/// `server` is its body, where `LISTEN` stands for `127.0.0.1:PORT` on a
/// free port and `DIR` for the prefix directory. `None` if nginx is missing
/// and peers may be skipped.
pub fn nginx(server: &str) -> Option<Nginx> {
    nginx_with("", server)
}

/// [`nginx`] with more `http`-level directives (`DIR` replaced there too).
pub fn nginx_with(http: &str, server: &str) -> Option<Nginx> {
    let bin = find_nginx()?;
    let dir = std::env::temp_dir().join(format!(
        "keepwire-nginx-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    let server = server
        .replace("LISTEN", &format!("127.0.0.1:{port}"))
        .replace("DIR", &d.to_string());
    let http = http.replace("DIR", &d.to_string());
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/tmp;\n proxy_temp_path {d}/tmp;\n\
          fastcgi_temp_path {d}/tmp;\n uwsgi_temp_path {d}/tmp;\n scgi_temp_path {d}/tmp;\n\
          {http}\n server {{\n{server}\n }}\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(bin)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut nginx = Nginx { child, addr, dir };
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
            panic!("nginx exited ({status}): {log}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nginx did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(nginx)
}
