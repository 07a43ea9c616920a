//! Opening an MQTT v5 connection and mapping its errors.

use std::time::Duration;

use pubsub_core::{Error, Result};
use rumqttc::v5::mqttbytes::v5::{ConnAck, ConnectReturnCode, Packet};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};

use crate::config::MqttConfig;

pub(crate) const NAME: &str = "mqtt";

/// How a connection should behave.
pub(crate) struct Session {
    pub client_id: String,
    /// Keep the session (subscriptions, queued and unacked messages) across disconnects.
    pub persistent: bool,
    pub manual_acks: bool,
    pub receive_maximum: Option<u16>,
}

pub(crate) fn options(config: &MqttConfig, session: &Session) -> Result<MqttOptions> {
    let mut o = MqttOptions::new(session.client_id.clone(), config.host.clone(), config.port);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_connection_timeout(config.timeout.as_secs().max(1));
    o.set_clean_start(!session.persistent);
    if session.persistent {
        o.set_session_expiry_interval(Some(config.session_expiry.as_secs().min(u32::MAX as u64) as u32));
    }
    o.set_manual_acks(session.manual_acks);
    o.set_receive_maximum(session.receive_maximum);
    o.set_max_packet_size(Some(268_435_455));
    // Without it, pipelined PUBLISHes and acks wait on Nagle for the
    // peer's delayed ACK: about 40 ms per window (measured with pubsub-bench).
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    o.set_network_options(network);
    if let (Some(user), Some(pass)) = (&config.username, &config.password) {
        o.set_credentials(user.clone(), pass.expose().to_string());
    } else if let Some(user) = &config.username {
        o.set_credentials(user.clone(), String::new());
    }
    if let Some(tls) = &config.tls {
        let rustls = tls.rustls_client_config(NAME)?;
        o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            std::sync::Arc::new(rustls),
        )));
    }
    Ok(o)
}

/// A connection error as ours; never includes the password.
pub(crate) fn map_connection_error(config: &MqttConfig, e: ConnectionError) -> Error {
    let at = format!("{}:{}", config.host, config.port);
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let refused = matches!(
                code,
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
            );
            let message = if refused {
                format!(
                    "{at} refused the credentials of user {:?} ({code:?})",
                    config.username.as_deref().unwrap_or("")
                )
            } else {
                format!("{at} refused the connection ({code:?})")
            };
            if refused {
                Error::Authentication {
                    backend: NAME,
                    message,
                    source: None,
                }
            } else {
                Error::Connection {
                    backend: NAME,
                    message,
                    source: None,
                }
            }
        }
        other => match pubsub_core::tls_failure(&other) {
            Some(why) => Error::Tls {
                backend: NAME,
                message: format!("connection to {at}: {why}"),
                source: Some(Box::new(other)),
            },
            None => Error::connection(NAME, format!("connection to {at}: {other}"), other),
        },
    }
}

/// Connects and waits (bounded by the config's timeout) for the CONNACK.
pub(crate) async fn connect(config: &MqttConfig, session: &Session) -> Result<(AsyncClient, EventLoop, ConnAck)> {
    let (client, mut eventloop) = AsyncClient::new(options(config, session)?, 1000);
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack),
                Ok(_) => {}
                Err(e) => return Err(map_connection_error(config, e)),
            }
        }
    };
    let ack = tokio::time::timeout(config.timeout * 2, wait)
        .await
        .map_err(|_| Error::Connection {
            backend: NAME,
            message: format!(
                "no CONNACK from {}:{} within {:?}",
                config.host,
                config.port,
                config.timeout * 2
            ),
            source: None,
        })??;
    Ok((client, eventloop, ack))
}
