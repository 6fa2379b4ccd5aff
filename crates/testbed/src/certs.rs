//! The TLS material kube-apiserver 1.20 insists on (it no longer serves plain HTTP): a CA, a
//! serving certificate for 127.0.0.1, and the service-account signing key, made with the
//! openssl command so no crypto crate is needed for a test harness.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Paths of the generated files inside the scratch directory.
pub(crate) struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| Error::Process {
            what: "running openssl".into(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Process {
            what: format!("openssl {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Writes a CA, a serving certificate for `127.0.0.1`/`localhost` signed by it, and an RSA key
/// pair for service-account tokens into `dir`.
pub(crate) fn generate(dir: &Path) -> Result<Certs, Error> {
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    let steps: [&[&str]; 6] = [
        &["genrsa", "-out", "ca.key", "2048"],
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=quiesce-testbed-ca",
            "-days",
            "2",
            "-out",
            "ca.crt",
        ],
        &["genrsa", "-out", "server.key", "2048"],
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-subj",
            "/CN=kube-apiserver",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            "server.crt",
        ],
        &["genrsa", "-out", "sa.key", "2048"],
    ];
    for step in steps {
        openssl(dir, step)?;
    }
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    Ok(Certs {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
    })
}
