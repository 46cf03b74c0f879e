//! The delay line is IP-level: UDP (what QUIC runs on) crosses it with the
//! same delay as TCP, and the loss model drops packets of either at the
//! rate set, per packet. Needs root (the namespaces); skips otherwise.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::netns::lacks_privilege;
use super::{Link, LinkSpec};
use crate::wire::UP;

fn link(rtt_ms: u64) -> Option<Link> {
    if let Some(why) = lacks_privilege() {
        eprintln!("skipped: the namespaces need root ({why})");
        return None;
    }
    Some(Link::netns(LinkSpec::default().rtt(Duration::from_millis(rtt_ms))).expect("link"))
}

/// A UDP socket on the server side that counts what it receives and, if
/// `echo`, sends every datagram back; (address, datagrams received so far).
fn udp_counter(
    link: &Link,
    echo: bool,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let ip = link.server.ip;
    let got = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = got.clone();
    let addr = link.server.run(move || async move {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::task::spawn_local(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                counter.fetch_add(1, Ordering::Relaxed);
                if echo {
                    let _ = sock.send_to(&buf[..n], from).await;
                }
            }
        });
        addr
    });
    (addr, got)
}

/// A TCP server that reads everything a connection sends and answers with
/// the byte count once the client shuts its side.
fn tcp_sink(link: &Link) -> SocketAddr {
    let ip = link.server.ip;
    link.server.run(move || async move {
        let l = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::task::spawn_local(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::task::spawn_local(async move {
                    let mut all = Vec::new();
                    if s.read_to_end(&mut all).await.is_ok() {
                        let _ = s.write_all(&(all.len() as u64).to_be_bytes()).await;
                    }
                });
            }
        });
        addr
    })
}

#[test]
fn udp_and_tcp_cross_the_line_alike() {
    let Some(link) = link(40) else { return };
    let (udp, got) = udp_counter(&link, true);
    let tcp = tcp_sink(&link);
    let before = link.wire.snapshot();
    let (udp_rtt, tcp_connect) = link.client.run(move || async move {
        let sock = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let t0 = Instant::now();
        sock.send_to(b"ping", udp).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("UDP echo within 5 s")
            .unwrap();
        assert_eq!(&buf[..n], b"ping");
        let udp_rtt = t0.elapsed();
        let t0 = Instant::now();
        let s = TcpStream::connect(tcp).await.unwrap();
        let connect = t0.elapsed();
        drop(s);
        (udp_rtt, connect)
    });
    let d = link.wire.snapshot() - before;
    // Both pay the link's round trip (two one-way delays), and not much more.
    for (what, t) in [("UDP echo", udp_rtt), ("TCP handshake", tcp_connect)] {
        assert!(
            t >= Duration::from_millis(40) && t < Duration::from_millis(240),
            "{what} took {t:?} over a 40 ms link"
        );
    }
    assert_eq!(got.load(Ordering::Relaxed), 1);
    // The datagram and the SYN (at least) went up through the delay line.
    assert!(d.packets[UP] >= 2, "{d:?}");
    assert_eq!(d.connections, 1, "the SYN is counted, the datagram is not");
    assert_eq!(link.dropped.load(Ordering::Relaxed), 0);
}

/// Sends `n` datagrams from the client side to `to`, paced.
fn send_datagrams(link: &Link, to: SocketAddr, n: u64) {
    link.client.run(move || async move {
        let sock = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        // Paced well under the bandwidth: only the loss model may drop.
        for i in 0..n {
            sock.send_to(&i.to_be_bytes(), to).await.unwrap();
            if i % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
}

#[test]
fn loss_drops_udp_and_tcp_per_packet() {
    let Some(link) = link(10) else { return };
    assert_eq!(link.loss(), 0.0);
    // A silent UDP sink: no echo, so every packet counted went up.
    let (sink, got) = udp_counter(&link, false);
    let settle = || std::thread::sleep(Duration::from_millis(100));

    // UDP at 20 %: about a fifth of 1000 datagrams never arrive, and every
    // one that did not is a drop the line counted.
    link.set_loss(0.2);
    assert_eq!(link.loss(), 0.2);
    let dropped0 = link.dropped.load(Ordering::Relaxed);
    send_datagrams(&link, sink, 1000);
    settle();
    let arrived = got.load(Ordering::Relaxed);
    let dropped = link.dropped.load(Ordering::Relaxed) - dropped0;
    // The kernels' own few packets (IPv6 neighbour discovery on a device
    // just up) cross the line too and may be dropped beside them.
    assert!(
        (1000..1010).contains(&(arrived + dropped)),
        "each datagram arrives or is dropped: {arrived} + {dropped}"
    );
    assert!(
        (150..=250).contains(&dropped),
        "{dropped} of 1000 dropped at 20 %"
    );

    // TCP at 5 %: the line drops its segments and ACKs at the same rate
    // (drops / packets offered), and TCP retransmits: the data arrives whole.
    link.set_loss(0.05);
    let tcp = tcp_sink(&link);
    let (before, dropped0) = (link.wire.snapshot(), link.dropped.load(Ordering::Relaxed));
    const BYTES: usize = 1024 * 1024;
    let echoed = link.client.run(move || async move {
        let mut s = TcpStream::connect(tcp).await.unwrap();
        // Paced (about 30 Mbit/s) so the router queue never fills: every
        // drop is the loss model's.
        for _ in 0..BYTES / 8192 {
            s.write_all(&[7u8; 8192]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        s.shutdown().await.unwrap();
        let mut n = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(60), s.read_exact(&mut n))
            .await
            .expect("the transfer ends within 60 s")
            .unwrap();
        u64::from_be_bytes(n)
    });
    settle();
    assert_eq!(echoed, BYTES as u64, "TCP recovered every lost segment");
    let d = link.wire.snapshot() - before;
    let dropped = link.dropped.load(Ordering::Relaxed) - dropped0;
    let offered = d.packets[0] + d.packets[1] + dropped;
    let rate = dropped as f64 / offered as f64;
    assert!(offered > 700, "{offered} packets");
    assert!(
        (0.025..=0.08).contains(&rate),
        "TCP: {dropped} of {offered} packets dropped at 5 % ({rate:.3})"
    );

    // Back to lossless: nothing more is dropped.
    link.set_loss(0.0);
    let (got0, dropped0) = (
        got.load(Ordering::Relaxed),
        link.dropped.load(Ordering::Relaxed),
    );
    send_datagrams(&link, sink, 200);
    settle();
    assert_eq!(got.load(Ordering::Relaxed) - got0, 200);
    assert_eq!(link.dropped.load(Ordering::Relaxed), dropped0);
}

/// The congestion control of a TCP connection across the link, at the
/// client's end and at the server's.
fn connection_congestion(
    link: &Link,
    to: SocketAddr,
    accepted: &std::sync::mpsc::Receiver<String>,
) -> (String, String) {
    use std::os::fd::AsRawFd;
    let client = link.client.run(move || async move {
        let s = TcpStream::connect(to).await.unwrap();
        super::tcp::congestion_of(s.as_raw_fd()).unwrap()
    });
    let server = accepted
        .recv_timeout(Duration::from_secs(5))
        .expect("the server end reports");
    (client, server)
}

#[test]
fn the_route_gives_new_tcp_connections_its_congestion_control() {
    let Some(link) = link(10) else { return };
    let default = link.congestion_control.clone().expect("exact link");
    // One the namespaces do not already run: cubic, which a host may
    // restrict for a namespace's default, else reno.
    let other = if default == "cubic" { "reno" } else { "cubic" };
    let ip = link.server.ip;
    let (tx, accepted) = std::sync::mpsc::channel();
    let addr = link.server.run(move || async move {
        use std::os::fd::AsRawFd;
        let l = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::task::spawn_local(async move {
            while let Ok((s, _)) = l.accept().await {
                let _ = tx.send(super::tcp::congestion_of(s.as_raw_fd()).unwrap());
            }
        });
        addr
    });
    let before = connection_congestion(&link, addr, &accepted);
    assert_eq!(before, (default.clone(), default.clone()));
    link.set_tcp_congestion(Some(other)).unwrap();
    let during = connection_congestion(&link, addr, &accepted);
    assert_eq!(during, (other.to_string(), other.to_string()));
    link.set_tcp_congestion(None).unwrap();
    let after = connection_congestion(&link, addr, &accepted);
    assert_eq!(after, (default.clone(), default));
}
