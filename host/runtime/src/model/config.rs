//! The operator's model configuration: providers (an OpenAI-compatible endpoint and its key, or a script of responses) and the aliases agents name, with their rate limits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Providers and the aliases that map onto them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Alias → provider and model. Agents name aliases only.
    #[serde(default)]
    pub models: BTreeMap<String, AliasConfig>,
    /// Reuse answers to repeated deterministic requests (off when absent).
    #[serde(default)]
    pub cache: Option<super::cache::CacheConfig>,
}

impl ModelConfig {
    /// Reads and parses a configuration file; relative paths in it (a
    /// script, a key file) are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let mut config: ModelConfig =
            toml::from_str(&text).map_err(|e| e.message().trim().to_owned())?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in config.providers.values_mut() {
            let file = match p {
                ProviderConfig::Openai { api_key_file, .. } => api_key_file.as_mut(),
                ProviderConfig::Scripted { file } => Some(file),
            };
            if let Some(f) = file
                && f.is_relative()
            {
                *f = base.join(&*f);
            }
        }
        Ok(config)
    }
}

/// Where completions come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// An OpenAI-compatible `/chat/completions` endpoint: OpenAI, vLLM,
    /// llama.cpp's server, Ollama, LiteLLM.
    Openai {
        /// Up to the version segment: `https://api.openai.com/v1`.
        base_url: String,
        /// The variable of corral's own environment that holds the key.
        #[serde(default)]
        api_key_env: Option<String>,
        /// Or a file that holds it (only the host can read it).
        #[serde(default)]
        api_key_file: Option<PathBuf>,
    },
    /// Responses replayed from a JSON file (see [`super::scripted`]): tests,
    /// the demo, offline use.
    Scripted { file: PathBuf },
}

/// One alias.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasConfig {
    pub provider: String,
    /// The provider's name for the model.
    pub model: String,
    /// Requests per minute through this alias, across all agents.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens (reserved) per minute through this alias.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
}
