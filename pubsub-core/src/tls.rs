//! TLS settings shared by every adapter, and (feature `tls`) the one rustls
//! client configuration they are turned into.
//!
//! Every adapter takes the same [`TlsConfig`]: a CA file (else the system's
//! trust store), an optional client certificate and key (mutual TLS) and an
//! optional server name to verify instead of the host connected to. The
//! adapters whose client library accepts a `rustls::ClientConfig` (NATS,
//! MQTT) get it from [`TlsConfig::rustls_client_config`], so certificate
//! checking is the same code on each of them.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// How to open and check a TLS connection to a broker.
///
/// Paths are printed by `Debug`; the key file's contents never are (they are
/// read only when connecting, and errors name the file, not what is in it).
///
/// ```
/// use pubsub_core::TlsConfig;
///
/// let tls = TlsConfig::default()
///     .with_ca_file("/etc/pubsub/ca.pem")
///     .with_client_auth("/etc/pubsub/client.pem", "/etc/pubsub/client.key");
/// assert!(tls.is_mutual());
/// assert!(format!("{tls:?}").contains("client.key"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM file of the CA certificates to trust; `None` trusts the system's
    /// store (`SSL_CERT_FILE`/`SSL_CERT_DIR` and the platform's roots).
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client's certificate chain, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the host
    /// connected to (a broker reached through an IP address or a tunnel).
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// Trusts the CAs in the PEM file `path` instead of the system's store.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents the certificate chain in `cert` with the key in `key` (mutual TLS).
    pub fn with_client_auth(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// Checks the server's certificate against `name` instead of the host.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Whether a client certificate is configured.
    pub fn is_mutual(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Refuses a half-configured client identity (a certificate without its
    /// key or the other way round), naming what is missing.
    pub fn check(&self, backend: &'static str) -> Result<()> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), None) => Err(Error::InvalidConfiguration(format!(
                "{backend} TLS: the client certificate file {} is set but no key file (both or neither)",
                cert.display()
            ))),
            (None, Some(key)) => Err(Error::InvalidConfiguration(format!(
                "{backend} TLS: the client key file {} is set but no certificate file (both or neither)",
                key.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Reads a PEM file named in this config, for client libraries that take
    /// the bytes; a missing or unreadable file is an
    /// [`Error::InvalidConfiguration`] naming the file and its role.
    pub fn read_pem(backend: &'static str, role: &str, path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| {
            Error::InvalidConfiguration(format!("{backend} TLS: cannot read the {role} {}: {e}", path.display()))
        })
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("server_name", &self.server_name)
            .finish()
    }
}

#[cfg(feature = "tls")]
mod rustls_config {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

    use super::TlsConfig;
    use crate::{Error, Result};

    /// The crypto every adapter uses: ring, chosen explicitly so that a
    /// process whose dependencies enable several rustls providers still works.
    pub fn crypto_provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Makes ring the process's default rustls provider if none is set yet,
    /// for client libraries that build their own `ClientConfig` with
    /// `ClientConfig::builder()` (redis-rs).
    pub fn install_default_provider() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    impl TlsConfig {
        /// The rustls client configuration these settings describe: trust
        /// roots, client identity, and the server-name override.
        ///
        /// Fails with [`Error::InvalidConfiguration`] naming the file when a
        /// PEM file is missing, unreadable or holds nothing usable.
        pub fn rustls_client_config(&self, backend: &'static str) -> Result<ClientConfig> {
            self.check(backend)?;
            let provider = crypto_provider();
            let roots = Arc::new(self.root_store(backend)?);
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| invalid(backend, format!("cannot build the certificate verifier: {e}")))?;
            let builder = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(backend, format!("no TLS protocol version: {e}")))?;
            let builder = match &self.server_name {
                Some(name) => {
                    let name = ServerName::try_from(name.clone()).map_err(|_| {
                        invalid(backend, format!("server name {name:?} is not a DNS name or IP address"))
                    })?;
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(NameOverride { inner: verifier, name }))
                }
                None => builder.with_webpki_verifier(verifier),
            };
            match (&self.cert_file, &self.key_file) {
                (Some(cert), Some(key)) => {
                    let chain = certificates(backend, "client certificate file", cert)?;
                    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                        invalid(
                            backend,
                            format!("no private key in the client key file {}: {e}", key.display()),
                        )
                    })?;
                    builder
                        .with_client_auth_cert(chain, key)
                        .map_err(|e| invalid(backend, format!("the client certificate and key do not fit: {e}")))
                }
                _ => Ok(builder.with_no_client_auth()),
            }
        }

        /// [`check`](Self::check), and that each file set holds what its
        /// role needs (a certificate in the CA and certificate files, a
        /// private key in the key file), for client libraries that would
        /// otherwise report a bad file vaguely or only during the handshake.
        pub fn check_files(&self, backend: &'static str) -> Result<()> {
            self.check(backend)?;
            if let Some(ca) = &self.ca_file {
                certificates(backend, "CA file", ca)?;
            }
            if let Some(cert) = &self.cert_file {
                certificates(backend, "client certificate file", cert)?;
            }
            if let Some(key) = &self.key_file {
                TlsConfig::read_pem(backend, "client key file", key)?;
                PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    invalid(
                        backend,
                        format!("no private key in the client key file {}: {e}", key.display()),
                    )
                })?;
            }
            Ok(())
        }

        fn root_store(&self, backend: &'static str) -> Result<RootCertStore> {
            let mut roots = RootCertStore::empty();
            match &self.ca_file {
                Some(path) => {
                    for cert in certificates(backend, "CA file", path)? {
                        roots.add(cert).map_err(|e| {
                            invalid(backend, format!("a certificate in the CA file {}: {e}", path.display()))
                        })?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(found.certs);
                    if roots.is_empty() {
                        return Err(invalid(
                            backend,
                            "no CA file is set and the system's trust store has no certificates; set a CA file",
                        ));
                    }
                }
            }
            Ok(roots)
        }
    }

    fn invalid(backend: &'static str, why: impl std::fmt::Display) -> Error {
        Error::InvalidConfiguration(format!("{backend} TLS: {why}"))
    }

    fn certificates(backend: &'static str, role: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
        let bytes = TlsConfig::read_pem(backend, role, path)?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| invalid(backend, format!("the {role} {} is not PEM: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(invalid(
                backend,
                format!("the {role} {} holds no certificate", path.display()),
            ));
        }
        Ok(certs)
    }

    /// Checks the server's certificate against a configured name instead of
    /// the host the client library connected to.
    #[derive(Debug)]
    struct NameOverride {
        inner: Arc<WebPkiServerVerifier>,
        name: ServerName<'static>,
    }

    impl ServerCertVerifier for NameOverride {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            self.inner
                .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }
}

#[cfg(feature = "tls")]
pub use rustls_config::{crypto_provider, install_default_provider};

/// What a TLS failure in an error's source chain means for the user, if the
/// chain holds one: "the server's certificate is not signed by a trusted CA",
/// "... has expired", "... is not valid for the host", "the server asked for
/// a client certificate", and so on. Adapters use it to turn a client
/// library's connection error into an [`Error::Tls`].
pub fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if let Some(why) = describe_tls_text(&text) {
            return Some(why);
        }
        current = e.source();
    }
    None
}

/// Matches the wording rustls and OpenSSL use for certificate and handshake
/// failures (client libraries often keep only the text of the TLS error).
fn describe_tls_text(text: &str) -> Option<String> {
    let t = text.to_ascii_lowercase();
    let why = if t.contains("unknownissuer") || t.contains("unknown issuer") || t.contains("unable to get local issuer")
    {
        "the server's certificate is not signed by a trusted CA (check the CA file)"
    } else if t.contains("expired") && t.contains("certificate") {
        // Not any "expired" (a token's, a session's): a certificate's.
        "the server's certificate has expired or is not yet valid"
    } else if t.contains("notvalidforname") || t.contains("not valid for name") || t.contains("hostname mismatch") {
        "the server's certificate is not valid for the host name (set the server name if it differs)"
    } else if t.contains("certificate required") || t.contains("certificaterequired") {
        "the server requires a client certificate (mutual TLS): set the client certificate and key"
    } else if t.contains("bad certificate")
        || t.contains("badcertificate")
        || t.contains("unknown ca")
        || t.contains("unknownca")
    {
        "the server refused the client certificate"
    } else if t.contains("invalidcertificate") || t.contains("invalid peer certificate") {
        "the server's certificate was refused"
    } else if t.contains("certificate verify failed") {
        // OpenSSL through librdkafka: which check failed is not in the text.
        "the server's certificate could not be verified (not signed by a trusted CA, expired, or for another host)"
    } else if t.contains("fatal alert") {
        "the server ended the TLS handshake (does it require a client certificate?)"
    } else if t.contains("corrupt message") || t.contains("invalidcontenttype") || t.contains("wrong version number") {
        "the server did not answer with TLS (is this a TLS port?)"
    } else {
        return None;
    };
    Some(format!("{why}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_client_identity_is_refused() {
        let only_cert = TlsConfig {
            cert_file: Some("c.pem".into()),
            ..TlsConfig::default()
        };
        let err = only_cert.check("redis").unwrap_err().to_string();
        assert!(err.contains("no key file"), "{err}");
        assert!(TlsConfig::default().with_client_auth("c", "k").check("redis").is_ok());
    }

    #[test]
    fn tls_failures_are_explained() {
        let io = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let why = tls_failure(&io).expect("recognised");
        assert!(
            why.starts_with("the server's certificate is not signed by a trusted CA"),
            "{why}"
        );
        let plain = std::io::Error::other("connection refused");
        assert_eq!(tls_failure(&plain), None);
        let token = std::io::Error::other("authentication failed: the token has expired");
        assert_eq!(tls_failure(&token), None, "a token's expiry is not a TLS failure");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_missing_ca_file_is_named() {
        let cfg = TlsConfig::default().with_ca_file("/nonexistent/ca.pem");
        let err = cfg.rustls_client_config("nats").unwrap_err();
        assert!(matches!(err, Error::InvalidConfiguration(_)), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
