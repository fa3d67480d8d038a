//! `netproxy ca init | path | show`: the MITM certificate authority under
//! `$NETPROXY_HOME/ca/` (docs/mitm.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use proxy_mitm::{CaInfo, CaStore};
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create the CA (ca.pem and ca.key under $NETPROXY_HOME/ca/); an existing one is left as it is
    Init,
    /// Print the CA certificate's path (what clients are told to trust)
    Path,
    /// Print the CA's subject, SHA-256 fingerprint and validity
    Show,
}

/// The CA directory: `ca/` in netproxy's home.
fn store(home: Option<PathBuf>) -> Option<CaStore> {
    home.map(|h| CaStore::new(h.join("ca")))
}

pub(crate) fn ca(cmd: &CaCommand, home: Option<PathBuf>) -> ExitCode {
    let name = match cmd {
        CaCommand::Init => "init",
        CaCommand::Path => "path",
        CaCommand::Show => "show",
    };
    let Some(store) = store(home) else {
        eprintln!(
            "netproxy ca {name}: neither NETPROXY_HOME nor HOME is set, so there is no place for the CA"
        );
        return ExitCode::from(1);
    };
    let cert = store.cert_path();
    let loaded = match cmd {
        CaCommand::Init => store.load_or_create().map(|l| Some((l.ca, l.created))),
        CaCommand::Path | CaCommand::Show => store.load().map(|ca| ca.map(|ca| (ca, false))),
    };
    let (ca, created) = match loaded {
        Ok(Some(found)) => found,
        Ok(None) => {
            eprintln!(
                "netproxy ca {name}: there is no MITM CA in {}; create it with `netproxy ca init`",
                store.dir().display()
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("netproxy ca {name}: {e}");
            return ExitCode::from(1);
        }
    };
    match cmd {
        CaCommand::Init => {
            if created {
                println!("created the MITM CA in {}", store.dir().display());
            } else {
                println!(
                    "the MITM CA in {} exists already; left as it is",
                    store.dir().display()
                );
            }
            println!("certificate: {}", cert.display());
            println!("sha256:      {}", ca.info().fingerprint());
            println!(
                "clients trust it with e.g. `curl --cacert {0}` or SSL_CERT_FILE={0}",
                cert.display()
            );
        }
        CaCommand::Path => println!("{}", cert.display()),
        CaCommand::Show => print!("{}", show(ca.info(), &cert)),
    }
    ExitCode::SUCCESS
}

fn show(info: &CaInfo, cert: &std::path::Path) -> String {
    let when = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_else(|_| t.to_string());
    format!(
        "subject:     {}\nsha256:      {}\nnot before:  {}\nnot after:   {}\ncertificate: {}\n",
        info.subject,
        info.fingerprint(),
        when(info.not_before),
        when(info.not_after),
        cert.display()
    )
}
