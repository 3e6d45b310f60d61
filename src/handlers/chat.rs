//! `chat`: a chat room people would use. Members have names (`guest-N` at first, `/nick NAME`
//! to change), see who is here (`/who`), who joins and leaves, and, on joining, what was said
//! before they came (the room's last `--history` lines). Each line goes to every other member
//! as `NAME: text`; the sender gets nothing back, as with `broadcast`.
//!
//! The handler keeps only the names of its own listener's members, to write their lines. What
//! must hold for the whole room is the room's to keep (`reactor/room.rs`): a name is unique in
//! it, whoever asks, and the list of who is here and the history span every listener of the
//! room. The handler asks the room ([`Outbox::claim_name`], [`Outbox::who`]) and hears back
//! ([`Handler::on_room`]). What members say (lines, `/me`) is what the room keeps for
//! newcomers; who joined, left or changed names are notices (`Recipient::RoomNotice`), not
//! kept.
//!
//! ```text
//! -> hello            (from guest-1: the others get "guest-1: hello")
//! -> /nick ann        <- * you are now ann        (the others: "* guest-1 is now ann")
//! -> /nick bob        <- ERR nick taken
//! -> /nick ann!       <- ERR bad nick: 1 to 32 of A-Z a-z 0-9 _ -
//! -> /who             <- * here: ann, bob
//! -> /me waves        (the others: "* ann waves")
//! -> /nope            <- ERR unknown command /nope: try /nick NAME, /who, /me ACTION, /help
//! ```

use std::collections::HashMap;

use crate::handlers::{ConnId, Handler, Outbox, Peer, Recipient, RoomEvent};

/// The commands, for `/help` and for an unknown one.
const COMMANDS: &str = "/nick NAME, /who, /me ACTION, /help";

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Chat {
    /// The names of this listener's members, once the room has given them one.
    names: HashMap<ConnId, String>,
}

/// Whether `name` is allowed: 1 to 32 of `A-Za-z0-9_-`.
pub fn valid_name(name: &[u8]) -> bool {
    (1..=32).contains(&name.len())
        && name.iter().all(|&byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

impl Chat {
    /// A line starting with `/`, from the member called `name`.
    fn command(from: Peer<'_>, name: &str, line: &[u8], out: &mut Outbox) {
        let (command, argument) = match line.iter().position(|&byte| byte == b' ') {
            Some(space) => (&line[..space], line[space + 1..].trim_ascii()),
            None => (line, &b""[..]),
        };
        match command {
            b"/nick" if valid_name(argument) => {
                if argument == name.as_bytes() {
                    out.reply(format!("* you are {name} already").as_bytes());
                } else {
                    out.claim_name(Some(&String::from_utf8_lossy(argument)));
                }
            }
            b"/nick" => out.reply(b"ERR bad nick: 1 to 32 of A-Z a-z 0-9 _ -"),
            b"/who" => out.who(),
            b"/me" if !argument.is_empty() => out.send_with(Recipient::AllExcept(from.id), |buf| {
                buf.extend_from_slice(b"* ");
                buf.extend_from_slice(name.as_bytes());
                buf.push(b' ');
                buf.extend_from_slice(argument);
            }),
            b"/me" => out.reply(b"ERR /me needs an action: /me waves"),
            b"/help" => {
                out.reply(format!("* commands: {COMMANDS}; any other line goes to the room").as_bytes())
            }
            _ => out.reply_with(|buf| {
                buf.extend_from_slice(b"ERR unknown command ");
                buf.extend_from_slice(command);
                buf.extend_from_slice(format!(": try {COMMANDS}").as_bytes());
            }),
        }
    }
}

impl Handler for Chat {
    fn on_connect(&mut self, _peer: Peer<'_>, out: &mut Outbox) {
        out.claim_name(None);
    }

    fn on_message(&mut self, from: Peer<'_>, message: &[u8], out: &mut Outbox) {
        let Some(name) = self.names.get(&from.id) else {
            // Its name is on its way (asked of an engine shared with other servers).
            return out.reply(b"ERR no name yet: try again in a moment");
        };
        if message.starts_with(b"/") {
            return Chat::command(from, name, message, out);
        }
        out.send_with(Recipient::AllExcept(from.id), |buf| {
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(message);
        });
    }

    fn on_room(&mut self, peer: Peer<'_>, event: RoomEvent<'_>, out: &mut Outbox) {
        match event {
            RoomEvent::Claimed { taken: true, .. } => out.reply(b"ERR nick taken"),
            RoomEvent::Claimed { name, taken: false } => {
                let others = Recipient::RoomNotice(peer.id);
                match self.names.insert(peer.id, name.to_string()) {
                    None => {
                        out.send(others, format!("* {name} joined").as_bytes());
                        out.reply(
                            format!("* you are {name}: /nick NAME to change it, /who, /help").as_bytes(),
                        );
                    }
                    Some(old) => {
                        out.send(others, format!("* {old} is now {name}").as_bytes());
                        out.reply(format!("* you are now {name}").as_bytes());
                    }
                }
            }
            RoomEvent::Present(names) => out.reply(format!("* here: {}", names.join(", ")).as_bytes()),
        }
    }

    fn on_disconnect(&mut self, peer: Peer<'_>, out: &mut Outbox) {
        if let Some(name) = self.names.remove(&peer.id) {
            out.send(Recipient::RoomNotice(peer.id), format!("* {name} left").as_bytes());
        }
    }

    fn on_member_gone(&mut self, name: &str, out: &mut Outbox) {
        out.send(Recipient::RoomNotice(ConnId::NONE), format!("* {name} left").as_bytes());
    }

    fn needs_connections(&self) -> bool {
        true
    }

    fn has_room(&self) -> bool {
        true
    }

    fn keeps_history(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::Intent;
    use crate::sys::address::PeerAddr;

    fn peer(addr: &PeerAddr, id: usize) -> Peer<'_> {
        Peer { id: ConnId(id), addr }
    }

    /// What a handler put in an outbox, as (recipient, text), intents apart.
    fn sent(out: &Outbox) -> Vec<(String, String)> {
        out.iter()
            .map(|(intent, payload)| match intent {
                Intent::Send { to, .. } => (format!("{to:?}"), String::from_utf8_lossy(payload).into_owned()),
                other => (format!("{other:?}"), String::new()),
            })
            .collect()
    }

    /// A member asks for a guest name on connect; once given, it is announced, and its lines
    /// go to the others under it.
    #[test]
    fn a_member_gets_a_name_and_speaks_under_it() {
        let (addr, mut chat) = (PeerAddr::Tcp("127.0.0.1:5000".parse().unwrap()), Chat::default());
        let mut out = Outbox::default();
        chat.on_connect(peer(&addr, 3), &mut out);
        assert_eq!(out.intents(), [Intent::ClaimName(None)]);
        let mut out = Outbox::default();
        chat.on_room(peer(&addr, 3), RoomEvent::Claimed { name: "guest-1", taken: false }, &mut out);
        assert_eq!(
            sent(&out),
            [
                ("RoomNotice(ConnId(3))".to_string(), "* guest-1 joined".to_string()),
                ("Sender".to_string(), "* you are guest-1: /nick NAME to change it, /who, /help".to_string()),
            ]
        );
        let mut out = Outbox::default();
        chat.on_message(peer(&addr, 3), b"hello", &mut out);
        assert_eq!(sent(&out), [("AllExcept(ConnId(3))".to_string(), "guest-1: hello".to_string())]);
    }

    /// `/nick` checks the name, asks the room for it, and says the change (or the refusal);
    /// `/me`, `/who`, `/help` and an unknown command.
    #[test]
    fn commands() {
        let (addr, mut chat) = (PeerAddr::Tcp("127.0.0.1:5000".parse().unwrap()), Chat::default());
        chat.on_room(
            peer(&addr, 1),
            RoomEvent::Claimed { name: "guest-1", taken: false },
            &mut Outbox::default(),
        );
        let run = |chat: &mut Chat, line: &[u8]| {
            let mut out = Outbox::default();
            chat.on_message(peer(&addr, 1), line, &mut out);
            out
        };
        assert_eq!(run(&mut chat, b"/nick ann").intents(), [Intent::ClaimName(Some("ann".into()))]);
        assert_eq!(sent(&run(&mut chat, b"/nick ann!"))[0].1, "ERR bad nick: 1 to 32 of A-Z a-z 0-9 _ -");
        assert_eq!(
            sent(&run(
                &mut chat,
                &[b'a'; 40].iter().fold(b"/nick ".to_vec(), |mut v, b| {
                    v.push(*b);
                    v
                })
            ))[0]
                .1,
            "ERR bad nick: 1 to 32 of A-Z a-z 0-9 _ -"
        );
        let mut out = Outbox::default();
        chat.on_room(peer(&addr, 1), RoomEvent::Claimed { name: "ann", taken: false }, &mut out);
        assert_eq!(sent(&out)[0], ("RoomNotice(ConnId(1))".to_string(), "* guest-1 is now ann".to_string()));
        let mut out = Outbox::default();
        chat.on_room(peer(&addr, 1), RoomEvent::Claimed { name: "bob", taken: true }, &mut out);
        assert_eq!(sent(&out)[0].1, "ERR nick taken");
        assert_eq!(run(&mut chat, b"/who").intents(), [Intent::Who]);
        let mut out = Outbox::default();
        chat.on_room(peer(&addr, 1), RoomEvent::Present(&["ann".to_string(), "bob".to_string()]), &mut out);
        assert_eq!(sent(&out)[0].1, "* here: ann, bob");
        assert_eq!(
            sent(&run(&mut chat, b"/me waves"))[0],
            ("AllExcept(ConnId(1))".to_string(), "* ann waves".to_string())
        );
        assert!(
            sent(&run(&mut chat, b"/nope"))[0].1.starts_with("ERR unknown command /nope: try /nick NAME")
        );
        let mut out = Outbox::default();
        chat.on_disconnect(peer(&addr, 1), &mut out);
        assert_eq!(sent(&out)[0].1, "* ann left");
    }
}
