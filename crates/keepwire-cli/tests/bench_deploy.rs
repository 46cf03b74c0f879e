//! docs/deploy/ checked against keepwire itself: every manifest parses as
//! YAML (PyYAML's `safe_load_all`, what kubectl's YAML reader accepts), the
//! binary accepts every flag the manifests pass it, and the numbers agree
//! with those flags rather than with a copy of them: the probe port is the
//! `--admin` port, the Service's target the `--listen` port, the drain
//! delay outlasts the readiness probe's failures, the grace period covers
//! the delay plus the drain (`--shutdown-timeout`, or the server's
//! default), keepwire started with the manifest's flags (moved to
//! loopback) answers both probe paths with 200, the loaders write where
//! their volume is mounted and the merge reads what they write. The image
//! itself is not built here.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{WAIT, free_port, run, start};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/deploy")
}

/// The documents of one manifest, parsed by PyYAML and handed over as JSON.
fn manifest(name: &str) -> Vec<Value> {
    parse(&deploy_dir().join(name))
}

fn parse(path: &std::path::Path) -> Vec<Value> {
    let name = path.display();
    let script = "import json, sys, yaml\n\
                  print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let out = std::process::Command::new("python3")
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{name} does not parse (pip install pyyaml if missing): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:?}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|a| a.as_str().expect("a string").to_string())
        .collect()
}

/// The value after `flag` in `args` (`--flag VALUE` or `--flag=VALUE`).
fn flag(args: &[String], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&prefix).map(str::to_string)
        }
    })
}

/// keepwire parses `args` (clap validates every flag and value before it
/// reaches a trailing `--help`, without running anything).
fn accepted(args: &[String]) {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.push("--help");
    let out = run(&all, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "keepwire rejects the manifest's {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A container port, by number or by the name of one of `ports`.
fn resolve(port: &Value, ports: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port number or name");
    ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

fn check_deployment(file: &str, command: &str) {
    let docs = manifest(file);
    let deployment = kind(&docs, "Deployment");
    let service = kind(&docs, "Service");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(args[0], command, "{file}");
    accepted(&args);
    let ports = &container["ports"];

    // Probes: the paths the admin listener answers, on its port.
    let admin: SocketAddr = flag(&args, "--admin")
        .expect("--admin in the args")
        .parse()
        .expect("--admin ADDR");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{file} {probe}");
        assert_eq!(
            resolve(&get["port"], ports),
            u64::from(admin.port()),
            "{file}: {probe} is not on the --admin port"
        );
    }

    // The Service reaches the --listen port of the pods it selects.
    let listen: SocketAddr = flag(&args, "--listen").unwrap().parse().unwrap();
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert_eq!(resolve(target, ports), u64::from(listen.port()), "{file}");
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][k], v, "{file}: selector {k}");
    }
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"],
        "{file}"
    );

    // Unready before the listener closes: the drain delay outlasts the
    // readiness probe's failures; SIGKILL only after the whole drain.
    let duration = |flag_name: &str, default: Duration| match flag(&args, flag_name) {
        Some(d) => humantime::parse_duration(&d).unwrap(),
        None => default,
    };
    let delay = duration("--drain-delay", Duration::ZERO);
    let drain = duration(
        "--shutdown-timeout",
        keepwire::server::Config::default().shutdown_timeout,
    );
    let ready = &container["readinessProbe"];
    let unready_after = ready["periodSeconds"].as_u64().unwrap_or(10)
        * ready["failureThreshold"].as_u64().unwrap_or(3);
    assert!(
        delay > Duration::from_secs(unready_after),
        "{file}: --drain-delay {delay:?} ends before the probe turns unready ({unready_after}s)"
    );
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        Duration::from_secs(grace) > delay + drain,
        "{file}: terminationGracePeriodSeconds {grace} does not cover --drain-delay {delay:?} + {drain:?}"
    );
    assert!(
        container["lifecycle"].is_null(),
        "{file}: no preStop hook needed"
    );

    // keepwire started with these flags (its addresses moved to loopback)
    // answers the probes: 200 on both while serving.
    let (listen_port, admin_port) = (free_port(), free_port());
    let local: Vec<String> = args
        .iter()
        .map(|a| {
            if a.parse::<SocketAddr>().ok() == Some(listen) {
                format!("127.0.0.1:{listen_port}")
            } else if a.parse::<SocketAddr>().ok() == Some(admin) {
                format!("127.0.0.1:{admin_port}")
            } else {
                a.clone()
            }
        })
        .collect();
    let local: Vec<&str> = local.iter().map(String::as_str).collect();
    let _running = start(&local);
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        assert_eq!(
            status(admin_port, path),
            200,
            "{file}: {probe} {path} on a running keepwire {local:?}"
        );
    }
}

/// The status code of `GET path` on 127.0.0.1:port (HTTP/1.1, bounded).
fn status(port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + WAIT;
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() > deadline => panic!("admin port {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

#[test]
fn serve_deployment_probes_the_admin_listener_and_covers_the_drain() {
    check_deployment("serve-deployment.yaml", "serve");
}

#[test]
fn proxy_deployment_probes_the_admin_listener_and_covers_the_drain() {
    check_deployment("proxy-deployment.yaml", "proxy");
}

#[test]
fn loaders_run_as_an_indexed_job_and_the_merge_reads_what_they_write() {
    let docs = manifest("loaders-job.yaml");
    let config = &kind(&docs, "ConfigMap")["data"];
    let claim = kind(&docs, "PersistentVolumeClaim")["metadata"]["name"].clone();
    let job = &kind(&docs, "Job")["spec"];
    assert_eq!(job["completionMode"], "Indexed");
    assert_eq!(job["parallelism"], job["completions"], "one pod per index");
    assert_eq!(
        job["backoffLimit"], 0,
        "a late loader must not run again alone"
    );
    let pod = &job["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];

    // Kubernetes' $(VAR) expansion, from the ConfigMap and the index.
    let mut env = vec![];
    for e in container["env"].as_array().unwrap() {
        let from = &e["valueFrom"];
        let value = if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            let index = "metadata.annotations['batch.kubernetes.io/job-completion-index']";
            assert_eq!(path, index);
            "0"
        } else {
            let key = &from["configMapKeyRef"];
            assert_eq!(key["name"], kind(&docs, "ConfigMap")["metadata"]["name"]);
            config[key["key"].as_str().unwrap()]
                .as_str()
                .unwrap_or_else(|| panic!("ConfigMap has no {}", key["key"]))
        };
        env.push((e["name"].as_str().unwrap().to_string(), value.to_string()));
    }
    // README.md sets an absolute start by rewriting the one `start-at:`
    // line (sed "s/^  start-at: .*/  start-at: \"$START\"/"): there must
    // be exactly one, and a quoted time must stay a string (YAML would read
    // it unquoted as a timestamp).
    let text = std::fs::read_to_string(deploy_dir().join("loaders-job.yaml")).unwrap();
    let lines = text
        .lines()
        .filter(|l| l.starts_with("  start-at: "))
        .count();
    assert_eq!(lines, 1, "one `  start-at: ` line for the README's sed");
    let at = "2031-01-01T00:00:00Z";
    let edited: String = text
        .lines()
        .map(|l| {
            if l.starts_with("  start-at: ") {
                format!("  start-at: \"{at}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("edited.yaml"), edited).unwrap();
    let edited = parse(&dir.path().join("edited.yaml"));
    assert_eq!(kind(&edited, "ConfigMap")["data"]["start-at"], at);

    let args: Vec<String> = strings(&container["args"])
        .into_iter()
        .map(|a| {
            env.iter()
                .fold(a, |a, (k, v)| a.replace(&format!("$({k})"), v))
        })
        .collect();
    assert!(
        !args.iter().any(|a| a.contains("$(")),
        "unexpanded: {args:?}"
    );
    assert_eq!(args[0], "bench");
    assert!(flag(&args, "--start-at").is_some(), "{args:?}");
    let cpus = container["resources"]["requests"]["cpu"].as_str().unwrap();
    assert_eq!(
        flag(&args, "--threads").as_deref(),
        Some(cpus),
        "a thread per CPU asked"
    );
    accepted(&args);

    // The document lands in the mounted volume, one file per index.
    let json = flag(&args, "--json").expect("--json=FILE");
    let mount = &container["volumeMounts"][0];
    let dir = mount["mountPath"].as_str().unwrap();
    assert_eq!(json, format!("{dir}/loader-0.json"));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], claim);

    // The merge job mounts the same claim and reads those files.
    let merge = manifest("merge-job.yaml");
    let pod = &kind(&merge, "Job")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        claim
    );
    let container = &pod["containers"][0];
    assert_eq!(container["volumeMounts"][0]["mountPath"], dir);
    let script = strings(&container["args"]).join(" ");
    assert!(
        script.contains(&format!("keepwire bench merge {dir}/loader-*.json")),
        "{script}"
    );
    let words: Vec<String> = script
        .trim_start_matches("exec keepwire ")
        .split(' ')
        .map(|w| w.replace('*', "0"))
        .collect();
    accepted(&words);
}

/// The Containerfile builds the package that owns the `keepwire` binary
/// and runs the binary it copies.
#[test]
fn containerfile_builds_and_runs_the_keepwire_binary() {
    let text = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    let cargo =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .unwrap();
    let cargo: toml::Value = cargo.parse().unwrap();
    let package = cargo["package"]["name"].as_str().unwrap();
    let bin = cargo["bin"][0]["name"].as_str().unwrap();
    assert!(text.contains(&format!("cargo build --release --locked -p {package}")));
    let copied = format!("/src/target/release/{bin} /usr/local/bin/{bin}");
    assert!(text.contains(&copied), "COPY {copied}");
    assert!(text.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")));
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "a builder and a runtime stage");
    for yaml in [
        "serve-deployment.yaml",
        "proxy-deployment.yaml",
        "loaders-job.yaml",
    ] {
        let docs = manifest(yaml);
        let image = docs
            .iter()
            .find_map(|d| {
                let spec = &d["spec"]["template"]["spec"];
                spec["containers"][0]["image"].as_str().map(str::to_string)
            })
            .unwrap();
        assert!(image.starts_with("keepwire:"), "{yaml}: {image}");
    }
}
