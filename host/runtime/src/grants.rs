//! Capability grants: deny-by-default access to directories, environment variables, model aliases and outbound HTTP.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::capability::Capability;
use crate::error::Denial;
use crate::http::HttpGrant;

/// What an agent may touch. Empty by default: no files, no environment, no
/// network. Nothing else is ever granted, and an agent gets only the grants
/// it requested ([`Grants::for_agent`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    pub env: Vec<EnvGrant>,
    /// Model aliases the agent may ask the host's gateway for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Where outbound HTTP requests may go (contract 0.2.0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpGrant>,
}

/// A host directory opened inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

/// An environment variable the agent sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvGrant {
    pub name: String,
    pub value: String,
}

impl DirGrant {
    /// Parses `host[:guest][:ro]`, the form of `--allow-dir`; the host
    /// directory must exist.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (spec, writable) = match spec.strip_suffix(":ro") {
            Some(rest) => (rest, false),
            None => (spec.strip_suffix(":rw").unwrap_or(spec), true),
        };
        let (host, guest) = match spec.split_once(':') {
            Some((h, g)) => (h, g.to_owned()),
            None => (spec, spec.to_owned()),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!("`{spec}` is not of the form host[:guest][:ro]"));
        }
        if !std::path::Path::new(host).is_dir() {
            return Err(format!("`{host}` is not a directory on this machine"));
        }
        Ok(Self {
            host: host.into(),
            guest,
            writable,
        })
    }
}

impl EnvGrant {
    /// Parses `NAME` (value taken from corral's own environment) or `NAME=VALUE`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (name, value) = match spec.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None => {
                let value = std::env::var(spec).map_err(|_| {
                    format!("`{spec}` is not set in corral's environment; pass `{spec}=VALUE`")
                })?;
                (spec.to_owned(), value)
            }
        };
        if name.is_empty() {
            return Err(format!("`{spec}` has no variable name"));
        }
        Ok(Self { name, value })
    }
}

impl Grants {
    /// Every capability in `requested` that these grants do not cover.
    pub fn denials(&self, requested: &[Capability]) -> Vec<Denial> {
        requested
            .iter()
            .filter(|cap| match cap {
                Capability::Env { name } => !self.env.iter().any(|e| &e.name == name),
                Capability::Dir {
                    guest_path,
                    writable,
                } => !self
                    .dirs
                    .iter()
                    .any(|d| &d.guest == guest_path && (d.writable || !writable)),
                Capability::Model { alias } => !self.models.contains(alias),
                // `*`: wherever the operator allows, but somewhere.
                Capability::Http { url } if url == "*" => self.http.is_empty(),
                Capability::Http { url } => match HttpGrant::parse(url) {
                    Ok(needed) => !self.http.iter().any(|g| g.covers(&needed)),
                    Err(_) => true,
                },
            })
            .map(|cap| Denial {
                capability: cap.clone(),
            })
            .collect()
    }

    /// What an agent that requests `requested` gets: only the grants it
    /// requested. A grant it did not ask for is withheld, and a directory
    /// it asked for read-only is opened read-only even if granted writable.
    /// Check [`denials`](Self::denials) first: this never adds anything.
    pub fn for_agent(&self, requested: &[Capability]) -> Grants {
        let env = self
            .env
            .iter()
            .filter(|e| {
                requested
                    .iter()
                    .any(|c| matches!(c, Capability::Env { name } if name == &e.name))
            })
            .cloned()
            .collect();
        let dirs = self
            .dirs
            .iter()
            .filter_map(|d| {
                requested.iter().find_map(|c| match c {
                    Capability::Dir {
                        guest_path,
                        writable,
                    } if guest_path == &d.guest => Some(DirGrant {
                        writable: d.writable && *writable,
                        ..d.clone()
                    }),
                    _ => None,
                })
            })
            .collect();
        let models = self
            .models
            .iter()
            .filter(|m| {
                requested
                    .iter()
                    .any(|c| matches!(c, Capability::Model { alias } if alias == *m))
            })
            .cloned()
            .collect();
        // An agent gets the HTTP access it declared, and only where a grant
        // covers it: never more than either says. `*` takes the grants as
        // they are.
        let mut http: Vec<HttpGrant> = Vec::new();
        for c in requested {
            match c {
                Capability::Http { url } if url == "*" => http.extend(self.http.iter().cloned()),
                Capability::Http { url } => http.extend(
                    HttpGrant::parse(url)
                        .ok()
                        .filter(|needed| self.http.iter().any(|g| g.covers(needed))),
                ),
                _ => {}
            }
        }
        http.dedup();
        Grants {
            dirs,
            env,
            models,
            http,
        }
    }

    /// These grants as capabilities, for a receipt: variable names and
    /// guest paths, never values or host paths.
    pub fn capabilities(&self) -> Vec<Capability> {
        let env = self.env.iter().map(|e| Capability::Env {
            name: e.name.clone(),
        });
        let dirs = self.dirs.iter().map(|d| Capability::Dir {
            guest_path: d.guest.clone(),
            writable: d.writable,
        });
        let models = self
            .models
            .iter()
            .map(|m| Capability::Model { alias: m.clone() });
        let http = self
            .http
            .iter()
            .map(|g| Capability::Http { url: g.to_string() });
        env.chain(dirs).chain(models).chain(http).collect()
    }

    /// The WASI context these grants allow, with stdio wired by the caller.
    pub(crate) fn wasi_builder(&self) -> anyhow::Result<WasiCtxBuilder> {
        let mut b = WasiCtxBuilder::new();
        for e in &self.env {
            b.env(&e.name, &e.value);
        }
        for d in &self.dirs {
            let perms = if d.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            b.preopened_dir(&d.host, &d.guest, perms)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "cannot open granted directory {} (guest path {})",
                        d.host.display(),
                        d.guest
                    )
                })?;
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dir_specs() {
        let tmp = std::env::temp_dir();
        let t = tmp.to_str().unwrap();
        let g = DirGrant::parse(&format!("{t}:/data:ro")).unwrap();
        assert_eq!((g.guest.as_str(), g.writable), ("/data", false));
        let g = DirGrant::parse(&format!("{t}:/out")).unwrap();
        assert_eq!((g.guest.as_str(), g.writable), ("/out", true));
        let g = DirGrant::parse(t).unwrap();
        assert_eq!(g.guest, t);
        assert!(
            DirGrant::parse("/no/such/dir:/data")
                .unwrap_err()
                .contains("not a directory")
        );
        assert!(DirGrant::parse(":/data").is_err());
    }

    #[test]
    fn parses_env_specs() {
        let g = EnvGrant::parse("A=b=c").unwrap();
        assert_eq!((g.name.as_str(), g.value.as_str()), ("A", "b=c"));
        assert!(
            EnvGrant::parse("CORRAL_SURELY_UNSET_VARIABLE")
                .unwrap_err()
                .contains("is not set")
        );
        assert!(EnvGrant::parse("=x").is_err());
    }
}
