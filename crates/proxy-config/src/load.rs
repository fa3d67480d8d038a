//! Reading the layers from files and the command line.

use std::path::{Path, PathBuf};

use proxy_core::Mode;
use toml::{Table, Value};

use crate::config::Config;
use crate::error::{Diagnostic, DiagnosticKind, Error};
use crate::layer::{Layer, LayerData, Parser};
use crate::locate::{Source, position};
use crate::managed::Requirements;

/// The requirements file that is always enforced when it exists, whatever
/// `$NETPROXY_SYSTEM_DIR` says.
pub const SYSTEM_REQUIREMENTS: &str = "/etc/netproxy/requirements.toml";

/// The command-line layer: the policy options of the command line (docs/config.md, "Layers").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliOverrides {
    /// `-c key=value` (key is a dotted path under `network`, value is TOML).
    pub set: Vec<String>,
    /// `--allow PATTERN`.
    pub allow: Vec<String>,
    /// `--deny PATTERN`.
    pub deny: Vec<String>,
    /// `--mode`.
    pub mode: Option<Mode>,
    /// `--allow-local-binding`.
    pub allow_local_binding: bool,
    /// `--mitm`.
    pub mitm: bool,
}

/// Where the layers come from. The caller (the binary) fills it from the environment and the
/// command line; this crate reads no environment variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// `$NETPROXY_SYSTEM_DIR` (default `/etc/netproxy`): `config.toml` and `requirements.toml`.
    pub system_dir: Option<PathBuf>,
    /// `$NETPROXY_HOME` (default `~/.netproxy`): `config.toml`.
    pub home_dir: Option<PathBuf>,
    /// `--config FILE`, in order (later wins). Each must exist.
    pub config_files: Vec<PathBuf>,
    /// `--requirements FILE`. Each must exist.
    pub requirement_files: Vec<PathBuf>,
    /// The always-enforced requirements file; [`SYSTEM_REQUIREMENTS`] unless a test overrides it.
    pub system_requirements: Option<PathBuf>,
    /// The command-line layer.
    pub cli: CliOverrides,
}

impl Sources {
    /// The config files to read, lowest first, with whether each must exist.
    pub fn config_paths(&self) -> Vec<(PathBuf, bool)> {
        let mut out = Vec::new();
        if let Some(d) = &self.system_dir {
            out.push((d.join("config.toml"), false));
        }
        if let Some(d) = &self.home_dir {
            out.push((d.join("config.toml"), false));
        }
        out.extend(self.config_files.iter().map(|p| (p.clone(), true)));
        out
    }

    /// The requirements files to enforce, with whether each must exist.
    pub fn requirement_paths(&self) -> Vec<(PathBuf, bool)> {
        let mut out: Vec<(PathBuf, bool)> = Vec::new();
        let system = self
            .system_requirements
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_REQUIREMENTS));
        out.push((system, false));
        if let Some(d) = &self.system_dir {
            out.push((d.join("requirements.toml"), false));
        }
        out.extend(self.requirement_files.iter().map(|p| (p.clone(), true)));
        let mut seen = Vec::new();
        out.retain(|(p, _)| {
            let key = p.canonicalize().unwrap_or_else(|_| p.clone());
            if seen.contains(&key) {
                false
            } else {
                seen.push(key);
                true
            }
        });
        out
    }
}

/// A file as read: its document, and its text to place its diagnostics.
#[derive(Debug, Clone)]
struct ReadDoc {
    doc: Table,
    source: Source,
}

/// `text` as a TOML document; a syntax error names where the file stops being TOML.
fn parse_toml(origin: String, text: String) -> Result<ReadDoc, Diagnostic> {
    match toml::from_str::<Table>(&text) {
        Ok(doc) => Ok(ReadDoc {
            doc,
            source: Source { origin, text },
        }),
        Err(e) => {
            let mut d = Diagnostic::new(
                DiagnosticKind::Syntax,
                origin,
                "",
                format!("invalid TOML: {}", e.message().trim_end()),
            );
            d.position = e.span().map(|s| position(&text, s.start));
            Err(d)
        }
    }
}

/// Reads a TOML file; `Ok(None)` when it is optional and missing.
fn read_toml(path: &Path, required: bool) -> Result<Option<ReadDoc>, Diagnostic> {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
        Err(e) => {
            return Err(Diagnostic::new(
                DiagnosticKind::Syntax,
                origin,
                "",
                format!("cannot read file: {e}"),
            ));
        }
    };
    parse_toml(origin, text).map(Some)
}

/// Reads a managed requirements file after checking that no other user can change it: the
/// file actually read (a symlink is followed and its target judged) must not be writable by
/// every user or by a group other than root's, nor may any folder above it, or above the path
/// as written, be (without the sticky bit); neither may carry a POSIX access ACL, whose
/// writers the mode bits do not show. `Ok(None)` when it is optional and missing; the warnings say when
/// the file or a folder above it belongs to a user other than root (the constraints then do
/// not hold against that user's processes).
fn read_requirements_toml(
    path: &Path,
    required: bool,
) -> Result<Option<(ReadDoc, Vec<String>)>, Diagnostic> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;

    let origin = path.display().to_string();
    let fail = |kind, message: String| Diagnostic::new(kind, origin.clone(), "", message);
    let unreadable = |e: std::io::Error| {
        fail(
            DiagnosticKind::Syntax,
            format!("cannot read requirements file: {e}"),
        )
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(fail(
            DiagnosticKind::Syntax,
            "cannot read requirements file: not a regular file".into(),
        ));
    }
    let insecure = |why: String| fail(DiagnosticKind::InsecureFile, format!("refused: {why}"));
    // An ACL first: its mask then stands in the group bits.
    match has_acl(rustix::fs::fgetxattr_query(&file, ACL_XATTR)) {
        Ok(false) => {}
        Ok(true) => return Err(insecure(format!("the file {ACL_REFUSED}"))),
        Err(e) => return Err(insecure(format!("the file's ACL cannot be read ({e})"))),
    }
    if let Some(why) = others_can_write(&meta, false) {
        return Err(insecure(format!("the file is {why}")));
    }
    let real = std::fs::canonicalize(path).map_err(unreadable)?;
    let same =
        std::fs::metadata(&real).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
    if !same {
        return Err(fail(
            DiagnosticKind::InsecureFile,
            "refused: the file was replaced while it was being read".into(),
        ));
    }
    let mut warnings = Vec::new();
    if meta.uid() != 0 {
        warnings.push(format!(
            "requirements file {origin} is owned by uid {}, not root: it does not hold against processes of the same user, which can rewrite it",
            meta.uid()
        ));
    }
    // Every folder above the file read, and above the path as written (its symlinks may be
    // replaced there), judged as it resolves.
    let written = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut folders: Vec<&Path> = Vec::new();
    for dir in real.ancestors().skip(1).chain(written.ancestors().skip(1)) {
        if !dir.as_os_str().is_empty() && !folders.contains(&dir) {
            folders.push(dir);
        }
    }
    let mut foreign_owner = None;
    for dir in folders {
        let Ok(m) = std::fs::metadata(dir) else {
            continue;
        };
        match has_acl(rustix::fs::getxattr_query(dir, ACL_XATTR)) {
            Ok(false) => {}
            Ok(true) => {
                return Err(insecure(format!(
                    "it lies in {}, a folder that {ACL_REFUSED}",
                    dir.display()
                )));
            }
            Err(e) => {
                return Err(insecure(format!(
                    "the ACL of {}, a folder it lies in, cannot be read ({e})",
                    dir.display()
                )));
            }
        }
        if let Some(why) = others_can_write(&m, true) {
            return Err(insecure(format!(
                "it lies in {}, a folder {why}",
                dir.display()
            )));
        }
        if m.uid() != 0 && foreign_owner.is_none() {
            foreign_owner = Some((dir.to_owned(), m.uid()));
        }
    }
    // A symlink on the way belongs to whoever may replace it.
    for link in written.ancestors() {
        if let Ok(m) = std::fs::symlink_metadata(link)
            && m.file_type().is_symlink()
            && m.uid() != 0
        {
            foreign_owner = Some((link.to_owned(), m.uid()));
            break;
        }
    }
    if let (Some((dir, uid)), true) = (foreign_owner, meta.uid() == 0) {
        warnings.push(format!(
            "requirements file {origin} is reached through {}, owned by uid {uid}, not root: it does not hold against processes of the same user, which can replace it",
            dir.display()
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(unreadable)?;
    parse_toml(origin, text).map(|d| Some((d, warnings)))
}

/// The extended attribute that holds a file's POSIX access ACL.
const ACL_XATTR: &str = "system.posix_acl_access";

/// Why a requirements file or a folder with an access ACL is refused (after "the file" or "a
/// folder that").
const ACL_REFUSED: &str = "has a POSIX ACL (system.posix_acl_access), so its mode bits do not tell who can write it; remove the ACL (`setfacl -b`) and make it writable by its owner only";

/// Whether the answer of a `getxattr` size query for [`ACL_XATTR`] says an ACL is there. A
/// file system without extended attributes has none.
fn has_acl(query: rustix::io::Result<usize>) -> Result<bool, rustix::io::Errno> {
    match query {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Who other than the owner (and root's group) can write a requirements file, or a folder on
/// its way, when anyone can: "writable by every user (mode 0666)" or "writable by group 100
/// (mode 0664)", followed by what that allows. A folder with the sticky bit is fine (only the
/// owner of an entry can replace it there).
fn others_can_write(meta: &std::fs::Metadata, folder: bool) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mode = meta.mode();
    if folder && mode & 0o1000 != 0 {
        return None;
    }
    let sticky = if folder {
        " without the sticky bit"
    } else {
        ""
    };
    let (who, whom) = if mode & 0o002 != 0 {
        ("every user".to_owned(), "any local user")
    } else if mode & 0o020 != 0 && meta.gid() != 0 {
        (format!("group {}", meta.gid()), "any member of that group")
    } else {
        return None;
    };
    let does = if folder {
        format!("where {whom} can replace it")
    } else {
        format!("so {whom} could change the managed constraints")
    };
    Some(format!(
        "writable by {who}{sticky} (mode {:04o}), {does}; make it writable by its owner only",
        mode & 0o7777
    ))
}

/// Parses one config document into a layer.
pub(crate) fn parse_layer(
    layer: Layer,
    origin: &str,
    doc: &Table,
    diags: &mut Vec<Diagnostic>,
) -> LayerData {
    let mut data = LayerData::new(layer);
    Parser {
        origin: origin.to_owned(),
        data: &mut data,
        diags,
    }
    .document(doc);
    data
}

/// Deep-merges `src` into `dst`.
fn merge_table(dst: &mut Table, src: Table) {
    for (k, v) in src {
        match (dst.get_mut(&k), v) {
            (Some(Value::Table(d)), Value::Table(s)) => merge_table(d, s),
            (_, v) => {
                dst.insert(k, v);
            }
        }
    }
}

/// The command-line layer as a document, parsed like a file.
fn cli_layer(cli: &CliOverrides, diags: &mut Vec<Diagnostic>) -> LayerData {
    let origin = "command-line";
    let mut doc = Table::new();
    for kv in &cli.set {
        let Some((key, value)) = kv.split_once('=') else {
            diags.push(Diagnostic::new(
                DiagnosticKind::Syntax,
                origin,
                kv.trim(),
                "expected -c key=value (e.g. -c mode=limited, -c limits.idle_timeout_s=60)",
            ));
            continue;
        };
        match cli_set(key, value) {
            Ok(t) => merge_table(&mut doc, t),
            Err((key, message)) => diags.push(Diagnostic::new(
                DiagnosticKind::Syntax,
                origin,
                key,
                message,
            )),
        }
    }
    let network = doc
        .entry("network")
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(net) = network {
        if let Some(m) = cli.mode {
            net.insert("mode".into(), Value::String(m.as_str().into()));
        }
        if cli.allow_local_binding {
            net.insert("allow_local_binding".into(), Value::Boolean(true));
        }
        if cli.mitm {
            net.insert("mitm".into(), Value::Boolean(true));
        }
    }
    let mut data = parse_layer(Layer::CommandLine, origin, &doc, diags);
    for p in &cli.allow {
        add_cli_domain(&mut data, p, "allow", diags);
    }
    for p in &cli.deny {
        add_cli_domain(&mut data, p, "deny", diags);
    }
    data
}

/// One `-c KEY=VALUE` as a `[network]` document. VALUE is TOML; for a key that holds a
/// string (`mode`, `audit_log`, a listener URL, a `domains` or `unix_sockets` entry), a plain
/// word that is not a TOML string is taken as the string itself (`-c mode=limited`,
/// `-c audit_log=/tmp/x.jsonl`). Where it cannot tell (a value with spaces or quotes that is
/// not TOML), the error says how to quote it. `Err((key path, why))`.
fn cli_set(written_key: &str, value: &str) -> Result<Table, (String, String)> {
    let key = written_key.trim();
    let key = key.strip_prefix("network.").unwrap_or(key);
    let path = format!("network.{key}");
    // The key alone first: its segments decide whether the value is a string.
    let segments = match toml::from_str::<Table>(&format!("{key} = 0")) {
        Ok(t) => key_segments(&t),
        Err(_) => {
            return Err((
                written_key.trim().to_owned(),
                "invalid key: expected a dotted path under `network` (e.g. -c limits.idle_timeout_s=60, -c 'domains.\"*.example.com\"=allow')".into(),
            ));
        }
    };
    let string_key = holds_string(&segments);
    let word = value.trim();
    let plain_word = !word.is_empty()
        && !word.starts_with(['[', '{', '#'])
        && !word.contains(['"', '\''])
        && !word.chars().any(|c| c.is_whitespace() || c.is_control());
    let as_string = |w: &str| {
        toml::from_str::<Table>(&format!(
            "[network]\n{key} = {}",
            Value::String(w.to_owned())
        ))
        .map_err(|e| (path.clone(), format!("cannot set it: {}", e.message())))
    };
    match toml::from_str::<Table>(&format!("[network]\n{key} = {value}")) {
        Ok(t) => {
            let is_string = matches!(leaf(&t, &segments), Some(Value::String(_)));
            if string_key && !is_string && plain_word {
                // `-c audit_log=2024-01-01`: a date to TOML, a file name to the key.
                as_string(word)
            } else {
                Ok(t)
            }
        }
        Err(_) if string_key && plain_word => as_string(word),
        Err(_) if string_key => Err((
            path.clone(),
            format!(
                "cannot tell where the string ends; quote it as a TOML string: -c {}",
                shell_quote(&format!(
                    "{}={}",
                    written_key.trim(),
                    Value::String(word.to_owned())
                ))
            ),
        )),
        Err(e) => Err((
            path.clone(),
            format!(
                "the value must be TOML (strings quoted, e.g. -c 'mode=\"limited\"'): {}",
                e.message().trim_end()
            ),
        )),
    }
}

/// The segments of the one dotted key of a `KEY = 0` document.
fn key_segments(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    let mut table = t;
    while let Some((k, v)) = table.iter().next() {
        out.push(k.clone());
        match v {
            Value::Table(inner) => table = inner,
            _ => break,
        }
    }
    out
}

/// The value at `segments` under `[network]`.
fn leaf<'a>(doc: &'a Table, segments: &[String]) -> Option<&'a Value> {
    let mut v = doc.get("network")?;
    for s in segments {
        v = v.as_table()?.get(s)?;
    }
    Some(v)
}

/// Whether the key under `network` at `segments` holds a string.
fn holds_string(segments: &[String]) -> bool {
    use crate::schema::{Kind, kind_of};
    match segments {
        [map, _] if map == "domains" || map == "unix_sockets" => true,
        _ => matches!(
            kind_of(&format!("network.{}", segments.join("."))),
            Some(Kind::Mode | Kind::ListenUrl | Kind::Text | Kind::Exporter)
        ),
    }
}

/// `text` as one shell word: single-quoted unless it needs no quoting.
fn shell_quote(text: &str) -> String {
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@,+%".contains(&b))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn add_cli_domain(data: &mut LayerData, pattern: &str, action: &str, diags: &mut Vec<Diagnostic>) {
    let mut doc = Table::new();
    let mut domains = Table::new();
    domains.insert(pattern.to_owned(), Value::String(action.to_owned()));
    let mut net = Table::new();
    net.insert("domains".into(), Value::Table(domains));
    doc.insert("network".into(), Value::Table(net));
    let before = diags.len();
    let parsed = parse_layer(Layer::CommandLine, "command-line", &doc, diags);
    for d in &mut diags[before..] {
        d.key = format!("--{action} {pattern}");
    }
    for (_, p, a) in parsed.domains {
        data.add_domain(p, a);
    }
}

/// Loads the effective config from `sources`, and `runtime` (the admin API's layer) on top.
/// Every diagnostic is reported at once.
pub fn load(sources: &Sources) -> Result<Config, Error> {
    load_with(sources, &[])
}

/// Like [`load`], with extra layers above the command line (e.g. the runtime layer).
pub fn load_with(sources: &Sources, extra: &[(Layer, Table)]) -> Result<Config, Error> {
    assemble(&read_files(sources), &sources.cli, extra)
}

/// Like [`load`], from texts instead of files: `configs` are the config layers as `(origin,
/// TOML text)`, lowest first, and `requirements` the requirements files likewise (their text
/// only: the permission checks of a file do not apply). The command line and every check are
/// [`load`]'s; nothing is read from disk. For tools and the fuzz targets (docs/fuzzing.md).
///
/// ```
/// use proxy_config::{CliOverrides, load_texts};
/// let user = "[network.domains]\n\"a.example\" = \"allow\"\n";
/// let managed = "[network]\nallowed_domains = [\"b.example\"]\n";
/// assert!(load_texts(&[("user.toml", user)], &[], &CliOverrides::default()).is_ok());
/// let e = load_texts(&[("user.toml", user)], &[("req.toml", managed)], &CliOverrides::default());
/// assert!(e.is_err());
/// ```
pub fn load_texts(
    configs: &[(&str, &str)],
    requirements: &[(&str, &str)],
    cli: &CliOverrides,
) -> Result<Config, Error> {
    let configs = configs
        .iter()
        .map(|(origin, text)| {
            let doc = parse_toml((*origin).to_owned(), (*text).to_owned()).map(Some);
            (PathBuf::from(origin), doc)
        })
        .collect();
    let requirements = requirements
        .iter()
        .map(|(origin, text)| {
            let doc =
                parse_toml((*origin).to_owned(), (*text).to_owned()).map(|d| Some((d, Vec::new())));
            (PathBuf::from(origin), doc)
        })
        .collect();
    assemble(&(configs, requirements), cli, &[])
}

/// A file of a layer as read: its document, `None` when optional and missing, or why it could
/// not be read.
type ReadFile = (PathBuf, Result<Option<ReadDoc>, Diagnostic>);

/// A requirements file as read: its document and the warnings about its ownership, `None`
/// when optional and missing, or why it could not be read or is refused.
type ReadRequirements = (PathBuf, Result<Option<(ReadDoc, Vec<String>)>, Diagnostic>);

/// Every file a load reads: the config layers' and the requirements'.
type ReadFiles = (Vec<ReadFile>, Vec<ReadRequirements>);

/// The config files and the requirements files of `sources`, read now.
fn read_files(sources: &Sources) -> ReadFiles {
    let configs = sources
        .config_paths()
        .into_iter()
        .map(|(path, required)| {
            let doc = read_toml(&path, required);
            (path, doc)
        })
        .collect();
    let requirements = sources
        .requirement_paths()
        .into_iter()
        .map(|(path, required)| {
            let doc = read_requirements_toml(&path, required);
            (path, doc)
        })
        .collect();
    (configs, requirements)
}

/// The effective config from files already read, the command line and `extra`; each
/// diagnostic about a file placed at its line and column.
fn assemble(
    files: &ReadFiles,
    cli: &CliOverrides,
    extra: &[(Layer, Table)],
) -> Result<Config, Error> {
    let (configs, requirements) = files;
    let sources: Vec<&Source> = configs
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok()?.as_ref().map(|d| &d.source))
        .chain(
            requirements
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok()?.as_ref().map(|(d, _)| &d.source)),
        )
        .collect();
    assemble_unplaced(files, cli, extra).map_err(|e| placed(e, &sources))
}

/// `e` with each diagnostic about one of `sources` placed at its line and column.
fn placed(mut e: Error, sources: &[&Source]) -> Error {
    for s in sources {
        s.place(&mut e.diagnostics);
    }
    e
}

/// [`assemble`], before the diagnostics are placed.
fn assemble_unplaced(
    (configs, requirement_files): &ReadFiles,
    cli: &CliOverrides,
    extra: &[(Layer, Table)],
) -> Result<Config, Error> {
    let mut diags = Vec::new();
    let mut layers = Vec::new();
    for (path, doc) in configs {
        match doc {
            Ok(Some(read)) => {
                let origin = path.display().to_string();
                layers.push(parse_layer(
                    Layer::File(path.clone()),
                    &origin,
                    &read.doc,
                    &mut diags,
                ));
            }
            Ok(None) => {}
            Err(d) => diags.push(d.clone()),
        }
    }
    layers.push(cli_layer(cli, &mut diags));
    for (layer, doc) in extra {
        let origin = layer.to_string();
        layers.push(parse_layer(layer.clone(), &origin, doc, &mut diags));
    }
    let mut requirements = Vec::new();
    let mut warnings = Vec::new();
    for (path, doc) in requirement_files {
        match doc {
            Ok(Some((read, w))) => {
                requirements.push(Requirements::parse(path, &read.doc, &mut diags));
                warnings.extend(w.iter().cloned());
            }
            Ok(None) => {}
            Err(d) => diags.push(d.clone()),
        }
    }
    if !diags.is_empty() {
        return Err(Error { diagnostics: diags });
    }
    let mut config = Config::from_layers(layers, requirements)?;
    config.add_warnings(warnings);
    config.policy()?;
    Ok(config)
}

/// Every file of a [`Sources`] read once, kept in memory: the layers of `netproxy run`, which
/// never re-reads a file during a session (docs/run.md). Loading from it with a runtime
/// layer on top (the admin API's changes) reads no file.
///
/// ```
/// use proxy_config::{ReadOnce, Sources};
/// let dir = tempfile::tempdir().unwrap();
/// let file = dir.path().join("a.toml");
/// std::fs::write(&file, "[network.domains]\n\"a.example\" = \"allow\"\n").unwrap();
/// let sources = Sources { config_files: vec![file.clone()], ..Default::default() };
/// let once = ReadOnce::read(sources);
/// std::fs::write(&file, "[network.domains]\n\"b.example\" = \"allow\"\n").unwrap();
/// let config = once.load_with(&[]).unwrap();
/// assert_eq!(config.domains()[0].pattern.as_str(), "a.example");
/// ```
#[derive(Debug, Clone)]
pub struct ReadOnce {
    sources: Sources,
    files: ReadFiles,
}

impl ReadOnce {
    /// Reads every config and requirements file of `sources` now (a file that cannot be read
    /// is remembered as such: every load then reports it).
    pub fn read(sources: Sources) -> Self {
        let files = read_files(&sources);
        Self { sources, files }
    }

    /// The sources the files were read from.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Like [`load_with`], from the files as they were read.
    pub fn load_with(&self, extra: &[(Layer, Table)]) -> Result<Config, Error> {
        assemble(&self.files, &self.sources.cli, extra)
    }
}

/// Validates config files on their own (`netproxy config validate FILE...`): every diagnostic
/// of every file, including the compiled policy's.
pub fn validate_files(files: &[PathBuf]) -> Result<(), Error> {
    let mut diags = Vec::new();
    for path in files {
        match read_toml(path, true) {
            Ok(Some(read)) => {
                let origin = path.display().to_string();
                let before = diags.len();
                let layer = parse_layer(Layer::File(path.clone()), &origin, &read.doc, &mut diags);
                if diags.len() == before {
                    match Config::from_layers(vec![layer], Vec::new()) {
                        Ok(c) => {
                            if let Err(e) = c.policy() {
                                diags.extend(e.diagnostics);
                            }
                        }
                        Err(e) => diags.extend(e.diagnostics),
                    }
                }
                read.source.place(&mut diags[before..]);
            }
            Ok(None) => {}
            Err(d) => diags.push(d),
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(Error { diagnostics: diags })
    }
}

/// Parses a requirements file on its own (refused, like at load, when other users could
/// write it).
pub fn read_requirements(path: &Path) -> Result<Requirements, Error> {
    let mut diags = Vec::new();
    let Some((read, _)) = read_requirements_toml(path, true).map_err(Error::one)? else {
        return Ok(Requirements::parse(path, &Table::new(), &mut diags));
    };
    let r = Requirements::parse(path, &read.doc, &mut diags);
    if diags.is_empty() {
        Ok(r)
    } else {
        read.source.place(&mut diags);
        Err(Error { diagnostics: diags })
    }
}
