//! The io_uring transport on its own: the cases where owning buffers the
//! kernel still uses can go wrong (dropped reads and writes, resets, EOF,
//! partial and large transfers, tasks that migrate between threads). The
//! server's behaviour on io_uring is covered by running the server's tests
//! with `KEEPWIRE_TEST_IO=uring` (scripts/test).
#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use keepwire::transport::{IoBackend, Transport};
use support::{FNV_START, WAIT, fnv, pattern, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected pair: ours on io_uring, the peer a plain tokio socket.
async fn pair() -> (Transport, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (ours, _) = listener.accept().await.unwrap();
    let ours = Transport::plain(ours, IoBackend::Uring);
    assert!(
        format!("{ours:?}").starts_with("Uring"),
        "not on io_uring: {ours:?}"
    );
    (ours, peer)
}

fn skip() -> bool {
    match IoBackend::Uring.check() {
        Ok(()) => false,
        Err(e) => {
            eprintln!("skipped: {e}");
            true
        }
    }
}

/// Megabytes both ways, the peer reading in small slices so that sends
/// complete partially and receives come in many pieces.
#[tokio::test]
async fn large_transfers_arrive_whole_both_ways() {
    if skip() {
        return;
    }
    let (mut ours, mut peer) = pair().await;
    let data = pattern(3 << 20);
    let want = fnv(FNV_START, &data);
    let (mut peer_rx, mut peer_tx) = peer.split();
    let sent = data.clone();
    let both = async {
        let send = async {
            ours.write_all(&sent).await.unwrap();
            ours.flush().await.unwrap();
            let mut got = Vec::new();
            while got.len() < sent.len() {
                let mut buf = [0u8; 7000];
                let n = ours.read(&mut buf).await.unwrap();
                assert!(n > 0, "early EOF");
                got.extend_from_slice(&buf[..n]);
            }
            got
        };
        let echo = async {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1500];
            while seen.len() < data.len() {
                let n = peer_rx.read(&mut buf).await.unwrap();
                assert!(n > 0, "early EOF at the peer");
                seen.extend_from_slice(&buf[..n]);
            }
            peer_tx.write_all(&seen).await.unwrap();
            seen
        };
        tokio::join!(send, echo)
    };
    let (back, seen) = within("3 MiB each way", Duration::from_secs(30), both).await;
    assert_eq!(fnv(FNV_START, &seen), want);
    assert_eq!(fnv(FNV_START, &back), want);
}

/// The end of the stream reads as 0; a reset as an error (or 0, if the
/// kernel reported the FIN first); neither hangs.
#[tokio::test]
async fn eof_and_reset_end_the_read() {
    if skip() {
        return;
    }
    let (mut ours, mut peer) = pair().await;
    peer.write_all(b"last").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut buf = Vec::new();
    within("EOF", WAIT, ours.read_to_end(&mut buf))
        .await
        .unwrap();
    assert_eq!(buf, b"last");

    let (mut ours, peer) = pair().await;
    let peer = peer.into_std().unwrap();
    socket2::SockRef::from(&peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer);
    let mut buf = [0u8; 16];
    match within("reset", WAIT, ours.read(&mut buf)).await {
        Ok(0) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("read {n} bytes from a reset connection"),
    }
    // Writing to it fails rather than hanging or raising SIGPIPE.
    let mut failed = false;
    for _ in 0..10 {
        if ours.write_all(&[0u8; 4096]).await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "writes to a reset connection kept succeeding");
}

/// Connections dropped with a receive in flight, or a send the peer never
/// reads, must not leave the socket open (their operations are cancelled:
/// the peer sees the close) nor break the ring for the connections after
/// them. Many at once, so that freed and reused operation slots cross.
#[tokio::test]
async fn dropping_connections_mid_read_and_mid_write_cancels_their_operations() {
    if skip() {
        return;
    }
    let mut peers = Vec::new();
    for i in 0..200 {
        let (mut ours, peer) = pair().await;
        if i % 2 == 0 {
            // A receive in flight: nothing will arrive.
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_millis(1), ours.read(&mut buf)).await;
            assert!(
                read.is_err(),
                "connection {i}: read {read:?} from a silent peer: {:?}",
                &buf[..8]
            );
        } else {
            // A send in flight that cannot complete: the peer never reads
            // and its receive window fills.
            let big = vec![7u8; 8 << 20];
            let write = tokio::time::timeout(Duration::from_millis(20), ours.write_all(&big)).await;
            assert!(write.is_err(), "8 MiB fit in the socket buffers");
        }
        drop(ours);
        peers.push(peer);
    }
    for (i, mut peer) in peers.into_iter().enumerate() {
        // Drain whatever was sent; then the close must show.
        let closed = async {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match peer.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        within(&format!("connection {i} closed"), WAIT, closed).await;
    }
    // The ring still serves new connections.
    let (mut ours, mut peer) = pair().await;
    peer.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    within("a read after the drops", WAIT, ours.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"ping");
}

/// More receives complete at once than the ring's pool has buffers (256):
/// the ones left without a buffer retry with their own, and every
/// connection still reads exactly its bytes.
#[tokio::test]
async fn more_receives_at_once_than_pool_buffers_still_arrive() {
    if skip() {
        return;
    }
    let mut conns = Vec::new();
    for _ in 0..300 {
        let (mut ours, peer) = pair().await;
        // A receive in flight (the read is dropped; the receive stays).
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_millis(1), ours.read(&mut buf)).await;
        assert!(read.is_err());
        conns.push((ours, peer));
    }
    for (i, (_, peer)) in conns.iter_mut().enumerate() {
        peer.write_all(format!("conn{i:04}").as_bytes())
            .await
            .unwrap();
    }
    // Let every receive complete before any is read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, (ours, _)) in conns.iter_mut().enumerate() {
        let mut got = [0u8; 8];
        within(
            "a receive after the pool ran dry",
            WAIT,
            ours.read_exact(&mut got),
        )
        .await
        .unwrap();
        assert_eq!(got, *format!("conn{i:04}").as_bytes());
    }
}

/// A multi-thread runtime: connections start on one worker's ring and may
/// be polled on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_migrating_between_threads_keep_working() {
    if skip() {
        return;
    }
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        tasks.push(tokio::spawn(async move {
            let (mut ours, mut peer) = pair().await;
            for round in 0..50u8 {
                let msg = [i, round, 1, 2, 3];
                peer.write_all(&msg).await.unwrap();
                let mut got = [0u8; 5];
                ours.read_exact(&mut got).await.unwrap();
                assert_eq!(got, msg);
                ours.write_all(&got).await.unwrap();
                let mut back = [0u8; 5];
                peer.read_exact(&mut back).await.unwrap();
                assert_eq!(back, msg);
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        within("a migrating connection", Duration::from_secs(20), t)
            .await
            .unwrap();
    }
}

/// The error names the cause and the way out, where io_uring is refused;
/// where it works, a server binds with it.
#[tokio::test]
async fn selecting_uring_fails_at_bind_only_where_it_cannot_run() {
    let bound = keepwire::Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .configure(|c| c.io = IoBackend::Uring)
        .bind();
    match IoBackend::Uring.check() {
        Ok(()) => assert!(bound.is_ok()),
        Err(e) => {
            let msg = bound.err().expect("bind must fail").to_string();
            assert!(msg.contains("io_uring"), "{msg} / {e}");
        }
    }
    assert_eq!("uring".parse::<IoBackend>(), Ok(IoBackend::Uring));
    assert_eq!("epoll".parse::<IoBackend>(), Ok(IoBackend::Epoll));
    assert!("kqueue".parse::<IoBackend>().is_err());
}
