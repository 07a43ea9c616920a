//! **Test support, not part of the SDK.** A loopback relay between Pulsar
//! clients and a [pulsar-lite] broker, working around two things that stop
//! the Rust `pulsar` crate from consuming from that broker:
//!
//! 1. pulsar-lite writes MESSAGE frames without the optional magic number
//!    `0x0e01` and CRC32C checksum; `pulsar` 6.9 always expects them (it
//!    reads two bytes of metadata size as the magic and rejects the frame
//!    with "Checksum mismatch"). The relay inserts both, computing the CRC32C
//!    over metadata size, metadata and payload as the protocol defines it.
//! 2. A topic lookup answers with the broker's own address, so a client would
//!    leave the relay after its first lookup. The relay rewrites the address
//!    in LOOKUP responses to its own.
//!
//! Frames in the other direction (client to broker) pass through untouched;
//! pulsar-lite accepts the checksummed SEND frames the clients write. Frames
//! that already carry the magic number are forwarded unchanged, so the relay
//! is harmless in front of a broker that checksums.
//!
//! ```text
//! pulsar-lite-relay --listen 127.0.0.1:6650 --broker 127.0.0.1:6651
//! ```
//!
//! `scripts/brokers.sh` and `pubsub::testing::TestBroker::pulsar` start it.
//!
//! [pulsar-lite]: https://pypi.org/project/pulsar-lite/

use std::net::SocketAddr;

use crc::{Crc, CRC_32_ISCSI};
use prost::Message as _;
use pulsar::proto::{base_command::Type, BaseCommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAGIC_CRC32C: u16 = 0x0e01;
/// The protocol's largest frame (pulsar-lite's default max message size is 5 MiB).
const MAX_FRAME: usize = 64 * 1024 * 1024;
const CASTAGNOLI: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (listen, broker) = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pulsar-lite-relay: {e}\nusage: pulsar-lite-relay --listen ADDR --broker ADDR");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pulsar-lite-relay: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    // The port actually bound (the caller may pass port 0).
    let listen = listener.local_addr().expect("a bound listener has an address");
    println!("pulsar-lite-relay listening on {listen}, broker {broker}");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    tokio::spawn(async move {
                        if let Err(e) = relay(client, broker, listen).await {
                            eprintln!("pulsar-lite-relay: connection ended: {e}");
                        }
                    });
                }
                Err(e) => eprintln!("pulsar-lite-relay: accept: {e}"),
            },
            _ = tokio::signal::ctrl_c() => return,
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(SocketAddr, SocketAddr), String> {
    let (mut listen, mut broker) = (None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let addr: SocketAddr = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
        match flag.as_str() {
            "--listen" => listen = Some(addr),
            "--broker" => broker = Some(addr),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok((
        listen.ok_or("--listen is required")?,
        broker.ok_or("--broker is required")?,
    ))
}

/// One client connection: client → broker copied as is, broker → client frame by frame.
async fn relay(client: TcpStream, broker: SocketAddr, listen: SocketAddr) -> Result<(), BoxError> {
    client.set_nodelay(true)?;
    let upstream = TcpStream::connect(broker).await?;
    upstream.set_nodelay(true)?;
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut broker_rd, mut broker_wr) = upstream.into_split();
    let to_broker = async {
        let r = tokio::io::copy(&mut client_rd, &mut broker_wr).await;
        let _ = broker_wr.shutdown().await;
        r.map(|_| ())
    };
    let own_url = format!("pulsar://{listen}");
    let to_client = async {
        loop {
            let mut size = [0u8; 4];
            if broker_rd.read_exact(&mut size).await.is_err() {
                break; // the broker closed the connection
            }
            let total = u32::from_be_bytes(size) as usize;
            if total > MAX_FRAME {
                return Err(format!("frame of {total} bytes from the broker").into());
            }
            let mut frame = vec![0u8; total];
            broker_rd.read_exact(&mut frame).await?;
            let fixed = fix_frame(&frame, &own_url)?;
            let out = fixed.as_deref().unwrap_or(&frame);
            client_wr.write_all(&(out.len() as u32).to_be_bytes()).await?;
            client_wr.write_all(out).await?;
        }
        let _ = client_wr.shutdown().await;
        Ok::<(), BoxError>(())
    };
    let (a, b) = tokio::join!(to_broker, to_client);
    a?;
    b
}

/// The frame (without its leading total size) as the client should see it,
/// or `None` if it passes unchanged.
fn fix_frame(frame: &[u8], own_url: &str) -> Result<Option<Vec<u8>>, BoxError> {
    let cmd_size = u32::from_be_bytes(frame.get(..4).ok_or("frame too short")?.try_into()?) as usize;
    let cmd_bytes = frame.get(4..4 + cmd_size).ok_or("command size beyond the frame")?;
    let rest = &frame[4 + cmd_size..];
    let mut command = BaseCommand::decode(cmd_bytes)?;
    if command.r#type() == Type::LookupResponse {
        let lookup = command
            .lookup_topic_response
            .as_mut()
            .ok_or("lookup response without body")?;
        if lookup.broker_service_url.is_none() {
            return Ok(None); // a failed lookup: nothing to rewrite
        }
        lookup.broker_service_url = Some(own_url.to_string());
        lookup.broker_service_url_tls = None;
        let cmd = command.encode_to_vec();
        let mut out = Vec::with_capacity(4 + cmd.len() + rest.len());
        out.extend_from_slice(&(cmd.len() as u32).to_be_bytes());
        out.extend_from_slice(&cmd);
        out.extend_from_slice(rest);
        return Ok(Some(out));
    }
    let has_magic = rest.len() >= 2 && u16::from_be_bytes([rest[0], rest[1]]) == MAGIC_CRC32C;
    if command.r#type() != Type::Message || rest.is_empty() || has_magic {
        return Ok(None);
    }
    // [cmd size][cmd] + [magic][crc32c of the rest] + [metadata size][metadata][payload]
    let mut out = Vec::with_capacity(frame.len() + 6);
    out.extend_from_slice(&frame[..4 + cmd_size]);
    out.extend_from_slice(&MAGIC_CRC32C.to_be_bytes());
    out.extend_from_slice(&CASTAGNOLI.checksum(rest).to_be_bytes());
    out.extend_from_slice(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsar::proto::{CommandLookupTopicResponse, CommandMessage, MessageIdData};

    fn frame(command: &BaseCommand, rest: &[u8]) -> Vec<u8> {
        let cmd = command.encode_to_vec();
        let mut f = (cmd.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&cmd);
        f.extend_from_slice(rest);
        f
    }

    fn message_command() -> BaseCommand {
        BaseCommand {
            r#type: Type::Message as i32,
            message: Some(CommandMessage {
                consumer_id: 1,
                message_id: MessageIdData {
                    ledger_id: 1,
                    entry_id: 2,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn adds_magic_and_crc32c_to_message_frames() {
        let rest = b"\x00\x00\x00\x02mdpayload";
        let fixed = fix_frame(&frame(&message_command(), rest), "pulsar://x:1")
            .unwrap()
            .unwrap();
        let tail = &fixed[fixed.len() - rest.len() - 6..];
        assert_eq!(&tail[..2], &[0x0e, 0x01]);
        assert_eq!(
            u32::from_be_bytes(tail[2..6].try_into().unwrap()),
            CASTAGNOLI.checksum(rest)
        );
        assert_eq!(&tail[6..], rest);
        // Known CRC32C check value of "123456789".
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn leaves_checksummed_frames_and_other_commands_alone() {
        let mut rest = vec![0x0e, 0x01, 0, 0, 0, 0];
        rest.extend_from_slice(b"\x00\x00\x00\x00");
        assert!(fix_frame(&frame(&message_command(), &rest), "u").unwrap().is_none());
        let ping = BaseCommand {
            r#type: Type::Ping as i32,
            ..Default::default()
        };
        assert!(fix_frame(&frame(&ping, &[]), "u").unwrap().is_none());
    }

    #[test]
    fn rewrites_lookup_addresses() {
        let lookup = BaseCommand {
            r#type: Type::LookupResponse as i32,
            lookup_topic_response: Some(CommandLookupTopicResponse {
                broker_service_url: Some("pulsar://127.0.0.1:6651".into()),
                request_id: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        let fixed = fix_frame(&frame(&lookup, &[]), "pulsar://127.0.0.1:6650")
            .unwrap()
            .unwrap();
        let cmd = BaseCommand::decode(&fixed[4..]).unwrap();
        let r = cmd.lookup_topic_response.unwrap();
        assert_eq!(r.broker_service_url.as_deref(), Some("pulsar://127.0.0.1:6650"));
        assert_eq!(r.request_id, 7);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert!(fix_frame(&[0, 0], "u").is_err());
        assert!(fix_frame(&[0, 0, 0, 9, 1], "u").is_err());
    }
}
