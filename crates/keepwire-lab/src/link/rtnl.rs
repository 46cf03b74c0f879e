//! The namespace's devices configured over rtnetlink, the kernel interface
//! iproute2's `ip` itself uses: no `ip` binary, no `PATH` lookup, no child
//! process, and an error is the kernel's errno for the exact step.
//!
//! Three requests are all the link needs, sent synchronously on the
//! namespace thread before its runtime starts (a netlink socket belongs to
//! the network namespace of the thread that opens it); a fourth replaces
//! the route to the peer to give it a congestion control (an experiment's,
//! while it runs). The messages come
//! from `netlink-packet-route`, the socket from `netlink-sys`: the
//! rust-netlink crates that `rtnetlink` is built on, without its async
//! connection task, which three acknowledged requests do not need.

use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A NETLINK_ROUTE socket of the calling thread's network namespace.
pub(super) struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    pub(super) fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sets the device `name` up, with a transmit queue of `txqueuelen`
    /// packets if given (`ip link set NAME [txqueuelen N] up`).
    pub(super) fn link_up(&mut self, name: &str, txqueuelen: Option<u32>) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = if_index(name)?;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes
            .extend(txqueuelen.map(LinkAttribute::TxQueueLen));
        self.request(
            &format!("set {name} up"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// Gives the device `name` the point-to-point address `local` with
    /// `peer` at the other end (`ip addr add LOCAL/32 peer PEER/32 dev NAME`):
    /// the kernel adds the /32 route to the peer through the device.
    pub(super) fn add_peer_address(
        &mut self,
        name: &str,
        local: Ipv4Addr,
        peer: Ipv4Addr,
    ) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = 32;
        msg.header.index = if_index(name)?;
        msg.attributes = vec![
            AddressAttribute::Local(local.into()),
            AddressAttribute::Address(peer.into()),
        ];
        self.request(
            &format!("address {local} peer {peer} on {name}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Replaces the /32 route to `peer` through `name` (the one
    /// [`Rtnl::add_peer_address`] made) with the same route whose TCP
    /// connections run congestion control `cc`, or none of its own (`ip
    /// route replace PEER/32 dev NAME proto kernel scope link src LOCAL
    /// [congctl CC]`). A route's algorithm may be one the host restricts
    /// for a namespace's default (see `tcp`), and applies to connections
    /// opened after it, at both ends.
    pub(super) fn peer_route_congestion(
        &mut self,
        name: &str,
        (local, peer): (Ipv4Addr, Ipv4Addr),
        cc: Option<&str>,
    ) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = 32;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Kernel;
        msg.header.scope = RouteScope::Link;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet(peer)),
            RouteAttribute::Oif(if_index(name)?),
            RouteAttribute::PrefSource(RouteAddress::Inet(local)),
        ];
        msg.attributes.extend(
            cc.map(|cc| RouteAttribute::Metrics(vec![RouteMetric::CcAlgo(cc.to_string())])),
        );
        self.request(
            &format!("route to {peer} via {name}, congestion control {cc:?}"),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(&mut self, what: &str, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0; req.header.length as usize];
        req.serialize(&mut buf);
        let fail = |e: io::Error| io::Error::new(e.kind(), format!("netlink, {what}: {e}"));
        self.socket.send(&buf, 0).map_err(fail)?;
        // Bounded: the kernel answers a request with one message; anything
        // else (a stray notification) is skipped, a few times at most.
        for _ in 0..16 {
            let (bytes, _) = self.socket.recv_from_full().map_err(fail)?;
            let mut at = 0;
            while at < bytes.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[at..])
                    .map_err(|e| fail(io::Error::other(e.to_string())))?;
                let len = reply.header.length as usize;
                if let (true, NetlinkPayload::Error(e)) =
                    (reply.header.sequence_number == self.seq, reply.payload)
                {
                    return match e.code {
                        None => Ok(()),
                        Some(code) => Err(fail(io::Error::from_raw_os_error(-code.get()))),
                    };
                }
                if len == 0 {
                    break;
                }
                at += len;
            }
        }
        Err(fail(io::Error::other("no acknowledgement")))
    }
}

/// The index of device `name` in the calling thread's network namespace.
fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::other(format!(
            "no device {name}: {}",
            io::Error::last_os_error()
        ))),
        i => Ok(i),
    }
}
