//! `herald bgp status`: this node's BGP sessions as the running speaker reports them on
//! `/status/bgp` (peer, address, state, uptime, prefixes sent and wanted, last error), as a
//! table or as JSON.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand, ValueEnum};

use super::fetch::{self, Access};
use crate::bgp::view::{self, BgpStatus};

/// The speaker's default `--metrics-addr` port.
pub const SPEAKER_PORT: u16 = 7472;

#[derive(Args, Debug)]
pub struct BgpArgs {
    #[command(subcommand)]
    command: BgpCommand,
}

#[derive(Subcommand, Debug)]
enum BgpCommand {
    /// Print this node's BGP sessions, as the running speaker reports them.
    Status(StatusArgs),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The speaker's HTTP endpoint (its --metrics-addr), e.g. http://203.0.113.5:7472 or
    /// https://… with --ca-cert. Default: http://$METALLB_HOST:7472 (the node address a
    /// speaker Pod gets), or http://127.0.0.1:7472 when METALLB_HOST is unset.
    #[arg(long, env = "HERALD_SPEAKER_URL")]
    pub speaker: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// A file holding a bearer token allowed to `get /metrics` (a speaker run with
    /// --metrics-authz requires one).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates the speaker's HTTPS certificate must chain to.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

/// `http://HOST:7472`, HOST being `METALLB_HOST` when it holds an address, else loopback.
pub fn default_url(metallb_host: Option<&str>) -> String {
    match metallb_host.and_then(|h| h.trim().parse::<IpAddr>().ok()) {
        Some(IpAddr::V6(ip)) => format!("http://[{ip}]:{SPEAKER_PORT}"),
        Some(IpAddr::V4(ip)) => format!("http://{ip}:{SPEAKER_PORT}"),
        None => format!("http://127.0.0.1:{SPEAKER_PORT}"),
    }
}

/// The report in the chosen format.
pub fn render(status: &BgpStatus, output: Output) -> Result<String> {
    Ok(match output {
        Output::Text => view::render_table(status),
        Output::Json => {
            let mut json = serde_json::to_string_pretty(status).context("encoding JSON")?;
            json.push('\n');
            json
        }
    })
}

pub fn run(args: BgpArgs) -> Result<()> {
    match args.command {
        BgpCommand::Status(args) => status(&args),
    }
}

fn status(args: &StatusArgs) -> Result<()> {
    let base = args
        .speaker
        .clone()
        .unwrap_or_else(|| default_url(std::env::var("METALLB_HOST").ok().as_deref()));
    let url = format!("{}{}", base.trim_end_matches('/'), view::PATH);
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token from {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let access = Access {
        token: token.as_deref(),
        ca: args.ca_cert.as_deref(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let (code, body) = runtime.block_on(fetch::get(&url, &access))?;
    if code != 200 {
        bail!("{url}: HTTP {code}: {}", body.trim());
    }
    let report: BgpStatus = serde_json::from_str(&body)
        .with_context(|| format!("{url} answered something else than a BGP status"))?;
    print!("{}", render(&report, args.output)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::session::State;
    use crate::bgp::view::SessionView;

    #[test]
    fn the_default_url_is_the_node_address_then_loopback() {
        assert_eq!(
            default_url(Some("198.51.100.9")),
            "http://198.51.100.9:7472"
        );
        assert_eq!(
            default_url(Some("2001:db8::9")),
            "http://[2001:db8::9]:7472"
        );
        assert_eq!(default_url(Some("")), "http://127.0.0.1:7472");
        assert_eq!(default_url(None), "http://127.0.0.1:7472");
    }

    #[test]
    fn json_output_is_the_speakers_report_again() {
        let report = BgpStatus {
            node: "node-a".into(),
            sessions: vec![SessionView {
                peer: "r4".into(),
                address: "203.0.113.1:179".parse().unwrap(),
                state: State::Established,
                uptime_seconds: Some(12),
                prefixes_sent: 1,
                prefixes_wanted: 1,
                last_error: None,
                local_address: Some("203.0.113.10:40000".parse().unwrap()),
                remote_router_id: Some("203.0.113.1".parse().unwrap()),
                updates_sent: 1,
                bfd: None,
            }],
        };
        let json = render(&report, Output::Json).unwrap();
        let back: BgpStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        let text = render(&report, Output::Text).unwrap();
        assert!(
            text.contains("r4    203.0.113.1:179  Established  12s"),
            "{text}"
        );
    }
}
