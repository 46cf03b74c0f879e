//! How bytes are split into reads must not matter, only their order: runs
//! are compared with adjacent `Data` events joined. Shared by the
//! integration tests and, through `#[path]`, the fuzz targets.

use bytes::BytesMut;
use keepwire_proto::Event;

/// Joins adjacent `Data` events and drops empty ones.
pub fn coalesce(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    for e in events {
        match (out.last_mut(), e) {
            (Some(Event::Data(prev)), Event::Data(more)) => {
                let mut joined = BytesMut::with_capacity(prev.len() + more.len());
                joined.extend_from_slice(prev);
                joined.extend_from_slice(&more);
                *prev = joined.freeze();
            }
            (_, Event::Data(more)) if more.is_empty() => {}
            (_, e) => out.push(e),
        }
    }
    out
}
