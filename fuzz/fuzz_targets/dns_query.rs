//! Any bytes as a DNS query from a sandbox, over UDP and TCP: an answer that parses again, a
//! query to forward, or a counted drop; never a panic. The same bytes as an upstream answer and
//! as the query of a SERVFAIL.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock};
use tools::daemon::dns::resolver::{
    accept_upstream_answer, servfail, Decision, ForwardQuery, Resolver, Transport,
};
use tools::daemon::dns::{Counters, NameTable};

fn resolver() -> &'static Mutex<Resolver> {
    static RESOLVER: OnceLock<Mutex<Resolver>> = OnceLock::new();
    RESOLVER.get_or_init(|| {
        let table = Arc::new(NameTable::new());
        let aliases = ["web".to_string(), "svc".to_string()];
        table
            .add_endpoint("n", "a", Ipv4Addr::new(10, 0, 0, 2), &aliases)
            .unwrap();
        table
            .add_endpoint("n", "b", Ipv4Addr::new(10, 0, 0, 3), &aliases[1..])
            .unwrap();
        table
            .add_endpoint("m", "c", Ipv4Addr::new(10, 1, 0, 2), &[])
            .unwrap();
        Mutex::new(Resolver::new(table, Arc::new(Counters::default())))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut resolver = resolver().lock().unwrap();
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        match resolver.resolve("a", data, transport, &mut out) {
            Decision::Answer => {
                let answer = hickory_proto::op::Message::from_vec(&out)
                    .expect("our answers parse");
                assert!(transport == Transport::Tcp || out.len() <= 65535);
                assert_eq!(answer.metadata.id, u16::from_be_bytes([data[0], data[1]]));
            }
            Decision::Forward(fwd) => {
                assert!(fwd.question_end <= data.len());
                let mut echo = data.to_vec();
                let _ = accept_upstream_answer(data, &fwd, &mut echo, fwd.id);
            }
            Decision::Drop => {}
        }
    }
    let fwd = ForwardQuery {
        id: 1,
        question_end: data.len().min(300),
        udp_limit: 512,
    };
    let mut answer = data.to_vec();
    let _ = accept_upstream_answer(data, &fwd, &mut answer, 7);
    let _ = servfail(data, &mut out);
});
