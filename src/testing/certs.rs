//! Throw-away certificates for TLS tests, made in process (rcgen): no
//! openssl command, nothing outside a temp dir.

use std::path::{Path, PathBuf};

use pubsub_core::{Error, Result, TlsConfig};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// A test CA and the certificates TLS tests need, as PEM files in a temp
/// dir that lives as long as this value.
///
/// Server certificates name `localhost` and `127.0.0.1`.
///
/// ```
/// use pubsub::testing::TestCertificates;
///
/// let certs = TestCertificates::generate()?;
/// assert!(certs.ca.is_file() && certs.server.key.is_file());
/// let tls = certs.client_tls(); // trusts the test CA
/// assert_eq!(tls.ca_file.as_deref(), Some(certs.ca.as_path()));
/// # Ok::<(), pubsub::Error>(())
/// ```
#[derive(Debug)]
pub struct TestCertificates {
    _dir: tempfile::TempDir,
    /// The test CA's certificate: trust this.
    pub ca: PathBuf,
    /// A server certificate for `localhost`/`127.0.0.1`, signed by the CA.
    pub server: CertFiles,
    /// A client certificate (mutual TLS), signed by the CA.
    pub client: CertFiles,
    /// A client certificate signed by another CA: a server must refuse it.
    pub untrusted_client: CertFiles,
    /// Another CA, which signed nothing the servers present: trusting only
    /// it must refuse every server.
    pub other_ca: PathBuf,
    /// A server certificate for `localhost`/`127.0.0.1` that expired in 2001.
    pub expired_server: CertFiles,
    /// A server certificate for `other.invalid` only.
    pub wrong_host_server: CertFiles,
}

impl TestCertificates {
    /// Makes a fresh CA and certificates.
    pub fn generate() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pubsub-certs-")
            .tempdir()
            .map_err(|e| Error::broker("testing", "temp dir for certificates", e))?;
        let path = dir.path().to_path_buf();
        let ca = Ca::new("pubsub test CA")?;
        let other = Ca::new("pubsub other CA")?;
        let here = ["localhost", "127.0.0.1"];
        Ok(TestCertificates {
            ca: write(&path, "ca.pem", &ca.pem)?,
            other_ca: write(&path, "other-ca.pem", &other.pem)?,
            server: ca.leaf(&path, "server", &here, Role::Server, false)?,
            client: ca.leaf(&path, "client", &["pubsub-test-client"], Role::Client, false)?,
            untrusted_client: other.leaf(&path, "untrusted-client", &["pubsub-test-client"], Role::Client, false)?,
            expired_server: ca.leaf(&path, "expired-server", &here, Role::Server, true)?,
            wrong_host_server: ca.leaf(&path, "wrong-host-server", &["other.invalid"], Role::Server, false)?,
            _dir: dir,
        })
    }

    /// Client settings that trust the test CA, without a client certificate.
    pub fn client_tls(&self) -> TlsConfig {
        TlsConfig::default().with_ca_file(&self.ca)
    }

    /// Client settings that trust the test CA and present the client certificate.
    pub fn mutual_tls(&self) -> TlsConfig {
        self.client_tls().with_client_auth(&self.client.cert, &self.client.key)
    }

    /// Server settings for a [`TestBroker`](super::TestBroker) with the
    /// valid server certificate.
    pub fn server_tls(&self, require_client_cert: bool) -> super::ServerTls {
        super::ServerTls {
            ca_file: self.ca.clone(),
            cert: self.server.clone(),
            require_client_cert,
        }
    }
}

enum Role {
    Server,
    Client,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Result<Self> {
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).map_err(failed)?.pem();
        Ok(Ca {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    fn leaf(&self, dir: &Path, name: &str, names: &[&str], role: Role, expired: bool) -> Result<CertFiles> {
        let key = KeyPair::generate().map_err(failed)?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(failed)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names[0].as_str());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match role {
            Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        Ok(CertFiles {
            cert: write(dir, &format!("{name}.pem"), &cert.pem())?,
            key: write(dir, &format!("{name}.key"), &key.serialize_pem())?,
        })
    }
}

fn write(dir: &Path, name: &str, pem: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, pem).map_err(|e| Error::broker("testing", format!("write {}", path.display()), e))?;
    Ok(path)
}

fn failed(e: rcgen::Error) -> Error {
    Error::broker("testing", "making a test certificate", e)
}
