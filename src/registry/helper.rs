//! Running credential helpers: the program `docker-credential-NAME` on
//! `PATH`, spoken to as the docker-credential-helpers protocol has it (the
//! action as the argument, its input on stdin, an answer on stdout). The
//! messages themselves are [`super::auth`]'s.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::auth::{helper_has_none, helper_store_input, parse_helper_get, Credentials, Helper};

/// The output of one run of a helper.
struct Run {
    ok: bool,
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `helper ACTION` with `input` on stdin. A helper that is not on
/// `PATH` or cannot be started is an error that names it.
fn run(helper: &Helper, action: &str, input: &str) -> Result<Run> {
    let program = helper.program();
    let mut child = match Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "credential helper {program} is not on PATH (the auth file names {:?} as {})",
            helper.name,
            if helper.default_store {
                "its credsStore"
            } else {
                "the registry's credHelpers entry"
            }
        ),
        Err(e) => return Err(e).with_context(|| format!("running credential helper {program}")),
    };
    let mut stdin = child.stdin.take().expect("piped");
    // A helper that exits without reading closes the pipe: its status
    // and output tell why, so a write error is not the story.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .with_context(|| format!("running credential helper {program}"))?;
    Ok(Run {
        ok: out.status.success(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The error of a helper that failed: its status and what it said.
fn failed(helper: &Helper, action: &str, server: &str, r: &Run) -> anyhow::Error {
    let said = [r.stdout.trim(), r.stderr.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    anyhow!(
        "credential helper {} {action} {server}: {}{}",
        helper.program(),
        r.status,
        if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        }
    )
}

/// `get`: the credentials `helper` keeps for `registry`, or `None` when it
/// says it has none ([`super::auth::HELPER_NOT_FOUND`]). Any other failure is
/// an error naming the helper.
pub fn get(helper: &Helper, registry: &str) -> Result<Option<Credentials>> {
    let server = helper.server_url(registry);
    let r = run(helper, "get", &server)?;
    if !r.ok {
        if helper_has_none(&r.stdout) || helper_has_none(&r.stderr) {
            return Ok(None);
        }
        return Err(failed(helper, "get", &server, &r));
    }
    parse_helper_get(&r.stdout)
        .map(Some)
        .map_err(|e| anyhow!("credential helper {} get {server}: {e}", helper.program()))
}

/// `store`: gives `helper` the credentials of `registry`.
pub fn store(helper: &Helper, registry: &str, creds: &Credentials) -> Result<()> {
    let server = helper.server_url(registry);
    let r = run(helper, "store", &helper_store_input(&server, creds))?;
    if !r.ok {
        return Err(failed(helper, "store", &server, &r));
    }
    Ok(())
}

/// `erase`: removes what `helper` keeps for `registry`; false when it had
/// nothing.
pub fn erase(helper: &Helper, registry: &str) -> Result<bool> {
    let server = helper.server_url(registry);
    let r = run(helper, "erase", &server)?;
    if !r.ok {
        if helper_has_none(&r.stdout) || helper_has_none(&r.stderr) {
            return Ok(false);
        }
        return Err(failed(helper, "erase", &server, &r));
    }
    Ok(true)
}
