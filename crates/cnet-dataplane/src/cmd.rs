//! Running the data plane's helper programs (`ip`, `nft`), optionally inside
//! another network namespace.
//!
//! Invariants:
//! - A helper runs with `LC_ALL=C`: its error texts are the untranslated ones
//!   the classifiers of [`crate::error`] read.
//! - A failure carries the helper's stderr and its [`crate::ErrorKind`].

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::{DataplaneError, Result};

/// A helper command: program, arguments, optional stdin and netns.
pub struct Cmd {
    program: &'static str,
    args: Vec<String>,
    stdin: Option<String>,
    netns: Option<String>,
}

impl Cmd {
    pub fn new(program: &'static str) -> Self {
        Cmd { program, args: Vec::new(), stdin: None, netns: None }
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    pub fn stdin(mut self, input: String) -> Self {
        self.stdin = Some(input);
        self
    }
    /// Run inside the network namespace at `path` (the child enters it before exec).
    pub fn netns(mut self, path: Option<&str>) -> Self {
        self.netns = path.map(str::to_string);
        self
    }

    /// Runs the command; its stdout on success, its stderr in the error.
    pub fn run(self) -> Result<String> {
        let mut command = Command::new(self.program);
        command
            .args(&self.args)
            .env("LC_ALL", "C")
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Kept open until the child has been spawned.
        let ns_file = match &self.netns {
            Some(path) => {
                Some(File::open(path).map_err(|source| DataplaneError::Netns { path: path.clone(), source })?)
            }
            None => None,
        };
        if let Some(f) = &ns_file {
            let fd = f.as_raw_fd();
            // SAFETY: the closure runs in the forked child before exec and only
            // calls setns(2), which is async-signal-safe; `fd` stays open in the
            // child until exec because the parent holds `ns_file` until spawn returns.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let program = self.program.to_string();
        let mut child = command.spawn().map_err(|source| DataplaneError::Spawn { program: program.clone(), source })?;
        drop(ns_file);
        if let Some(input) = &self.stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // A broken pipe shows up as the command's own failure below.
            let _ = pipe.write_all(input.as_bytes());
        }
        let out =
            child.wait_with_output().map_err(|source| DataplaneError::Spawn { program: program.clone(), source })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if stderr.is_empty() {
                stderr = format!("exit status {}", out.status);
            }
            if let Some(input) = &self.stdin {
                tracing::debug!(%program, %stderr, input = %input, "helper failed");
            }
            Err(DataplaneError::failed(&program, stderr))
        }
    }
}
