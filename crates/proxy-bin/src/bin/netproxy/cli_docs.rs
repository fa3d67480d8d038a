//! `netproxy completions SHELL` and `netproxy man`: shell completions and the man page,
//! generated from the same clap definitions as the command line itself, so they never drift
//! from it. `cargo xtask dist-docs DIR` writes both into a folder for packagers.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

/// Prints the completions for `shell` on stdout.
pub(crate) fn completions(
    shell: clap_complete::Shell,
    mut cmd: clap::Command,
) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "netproxy", &mut out);
    write_stdout(&out)
}

/// Prints the man page (roff) on stdout, or, with `out_dir`, writes one page per command there
/// (`netproxy.1`, `netproxy-serve.1`, `netproxy-config-validate.1`, ...). The pages carry the
/// version alone, not the commit or the build profile: the same source gives the same pages.
pub(crate) fn man(cmd: clap::Command, out_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, page) in pages(cmd)? {
                let path = dir.join(name);
                std::fs::write(&path, page)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        None => write_stdout(page(titled(cmd))?.as_bytes()),
    }
}

/// Every page: the command's and, depth first, each visible subcommand's, with its file name.
fn pages(cmd: clap::Command) -> anyhow::Result<Vec<(String, String)>> {
    fn walk(cmd: clap::Command, out: &mut Vec<(String, String)>) -> anyhow::Result<()> {
        let man = titled(cmd.clone());
        out.push((man.get_filename(), page(man)?));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub.clone(), out)?;
        }
        Ok(())
    }
    // Built, so that each subcommand's page is named and titled `netproxy-SUB`.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, &mut out)?;
    Ok(out)
}

/// The page of `cmd`, whose title names netproxy's version (for a subcommand too).
fn titled(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).source(concat!("netproxy ", env!("CARGO_PKG_VERSION")))
}

/// One page as roff text, its `.TH` title line first (roff's definition of the apostrophe
/// string, which the renderer writes first, may follow it: it is used only further down).
fn page(man: clap_mangen::Man) -> anyhow::Result<String> {
    let mut out = Vec::new();
    man.render(&mut out).context("cannot render the man page")?;
    let text = String::from_utf8(out).context("the man page is not UTF-8")?;
    let mut lines: Vec<&str> = text.lines().collect();
    if let Some(i) = lines.iter().position(|l| l.starts_with(".TH ")) {
        let title = lines.remove(i);
        lines.insert(0, title);
    }
    let mut page = lines.join("\n");
    page.push('\n');
    Ok(page)
}

/// Writes `bytes` to stdout; a closed pipe (`netproxy man | head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}
