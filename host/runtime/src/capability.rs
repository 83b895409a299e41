//! What an agent may ask for in `describe`: an environment variable, a directory, or (contract 0.2.0) a model alias or outbound HTTP.

use serde::Serialize;

use crate::wit::latest as wit;

/// A capability an agent requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Capability {
    Env {
        name: String,
    },
    Dir {
        guest_path: String,
        writable: bool,
    },
    /// Completions from a model alias, through the host's gateway.
    Model {
        alias: String,
    },
    /// Outbound HTTP requests within a grant-form URL,
    /// `[METHODS ]scheme://host[:port][/path-prefix]`.
    Http {
        url: String,
    },
}

impl From<wit::corral::agent::types::Capability> for Capability {
    fn from(c: wit::corral::agent::types::Capability) -> Self {
        use wit::corral::agent::types::Capability as W;
        match c {
            W::Env(name) => Capability::Env { name },
            W::Dir(d) => Capability::Dir {
                guest_path: d.guest_path,
                writable: d.writable,
            },
            W::Model(alias) => Capability::Model { alias },
            W::Http(url) => Capability::Http { url },
        }
    }
}

impl From<crate::wit::since_v0_1_0::corral::agent::types::Capability> for Capability {
    fn from(c: crate::wit::since_v0_1_0::corral::agent::types::Capability) -> Self {
        use crate::wit::since_v0_1_0::corral::agent::types::Capability as W;
        match c {
            W::Env(name) => Capability::Env { name },
            W::Dir(d) => Capability::Dir {
                guest_path: d.guest_path,
                writable: d.writable,
            },
        }
    }
}
