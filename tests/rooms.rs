//! A room's lines are framed once per turn and written to every member from one buffer
//! (`reactor/room.rs`): what a member gets still arrives in exactly the order it was sent,
//! mixed with everything else addressed to it.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use evloop::{Codec, ConnId, Handler, Outbox, Peer, Recipient, Server, ServerConfig};
use util::TestServer;

/// Tells each client its id; then, for `<id> <text>`, sends `room <text>` to the rest of the
/// room, then `direct <text>` to connection `<id>`, then `ack <text>` to the sender.
struct Relay;

impl Handler for Relay {
    fn on_connect(&mut self, peer: Peer<'_>, out: &mut Outbox) {
        out.reply(format!("id {}", peer.id).as_bytes());
    }

    fn on_message(&mut self, from: Peer<'_>, message: &[u8], out: &mut Outbox) {
        let text = String::from_utf8_lossy(message);
        let (to, text) = text.split_once(' ').expect("<id> <text>");
        out.send(Recipient::AllExcept(from.id), format!("room {text}").as_bytes());
        out.send(Recipient::Conn(ConnId(to.parse().expect("an id"))), format!("direct {text}").as_bytes());
        out.reply(format!("ack {text}").as_bytes());
    }
}

/// A client and what it reads.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    id: String,
}

impl Client {
    fn connect(server: &TestServer) -> Client {
        let writer = TcpStream::connect(server.addr()).unwrap();
        writer.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
        let mut client =
            Client { reader: BufReader::new(writer.try_clone().unwrap()), writer, id: String::new() };
        client.id = client.line().strip_prefix("id ").expect("its id first").to_string();
        client
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line in time");
        line.trim_end().to_string()
    }

    fn lines(&mut self, count: usize) -> Vec<String> {
        (0..count).map(|_| self.line()).collect()
    }
}

/// Many messages in one write, each sending a room line and then a direct line to one
/// member: that member gets each room line before the direct line that followed it, the
/// others get the room lines in order, and the sender gets its acks, nothing else.
#[test]
fn room_lines_keep_their_place_among_other_output() {
    let builder = Server::builder(ServerConfig::default()).serve(
        "relay",
        Relay,
        Codec::Line,
        ["127.0.0.1:0".parse().unwrap()],
    );
    let server = TestServer::from_builder(builder);
    let mut sender = Client::connect(&server);
    let mut target = Client::connect(&server);
    let mut other = Client::connect(&server);
    let count = 500;
    let batch: String = (0..count).map(|i| format!("{} m{i}\n", target.id)).collect();
    sender.writer.write_all(batch.as_bytes()).unwrap();

    let expected_target: Vec<String> =
        (0..count).flat_map(|i| [format!("room m{i}"), format!("direct m{i}")]).collect();
    assert_eq!(target.lines(2 * count), expected_target);
    let expected_other: Vec<String> = (0..count).map(|i| format!("room m{i}")).collect();
    assert_eq!(other.lines(count), expected_other);
    let expected_acks: Vec<String> = (0..count).map(|i| format!("ack m{i}")).collect();
    assert_eq!(sender.lines(count), expected_acks);
}

/// Every member sends at once: each gets every other member's lines exactly once, in each
/// sender's order, and none of its own.
#[test]
fn many_senders_each_get_all_but_their_own() {
    let server = TestServer::start(&["broadcast=127.0.0.1:0"]);
    let mut members: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(server.addr()).unwrap()).collect();
    server.wait_for("all five in the room", |stats| stats.connections_accepted == 5);
    let count = 200;
    for (index, member) in members.iter_mut().enumerate() {
        let lines: String = (0..count).map(|i| format!("from{index} line{i}\n")).collect();
        member.write_all(lines.as_bytes()).unwrap();
    }
    for (index, member) in members.iter().enumerate() {
        member.set_read_timeout(Some(util::READ_TIMEOUT)).unwrap();
        let mut reader = BufReader::new(member.try_clone().unwrap());
        let mut next = [0usize; 5];
        for _ in 0..4 * count {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a line in time");
            let message = line.trim_end().split_once(": ").expect("<addr>: <message>").1.to_string();
            let (from, number) = message.split_once(' ').unwrap();
            let sender: usize = from.strip_prefix("from").unwrap().parse().unwrap();
            assert_ne!(sender, index, "member {index} got its own line: {message}");
            assert_eq!(
                number,
                format!("line{}", next[sender]),
                "member {index}, sender {sender} out of order"
            );
            next[sender] += 1;
        }
        assert!(next.iter().enumerate().all(|(sender, &got)| got == if sender == index { 0 } else { count }));
    }
}

/// A room larger than one turn's writes (`ROOM_WRITES_PER_TURN`, 512) gets a line over
/// several turns. Lines sent meanwhile come after it, for every member; members that leave
/// during a release cost the others nothing; one that joins during it gets only the lines
/// sent after it joined.
#[test]
fn a_room_larger_than_a_turn_gets_every_line_in_order() {
    let server = TestServer::start(&["broadcast=127.0.0.1:0"]);
    let mut members: Vec<util::Client> = (0..1_300).map(|_| util::connect(server.addr())).collect();
    server.wait_for("1,300 members", |stats| stats.connections_open == 1_300);
    let mut sender = members.remove(0);
    for index in 0..5 {
        sender.send_line(&format!("line {index}"));
    }
    // Leave while those are being written: the first hundred after the sender.
    let leaving: Vec<util::Client> = members.drain(..100).collect();
    drop(leaving);
    let mut newcomer = util::connect(server.addr());
    server.wait_for("the newcomer in, the leavers out", |stats| stats.connections_open == 1_201);
    sender.send_line("after the newcomer");
    let from = sender.local_addr();
    for member in members.iter_mut() {
        for index in 0..5 {
            assert_eq!(member.line(), format!("{from}: line {index}"));
        }
        assert_eq!(member.line(), format!("{from}: after the newcomer"));
    }
    assert_eq!(newcomer.line(), format!("{from}: after the newcomer"), "only what came after it joined");
}
