//! The Hugging Face hub's HTTP API, as huggingface_hub and llama.cpp call
//! it: a repository's files at a revision (`/api/models/{repo}/revision/
//! {rev}?blobs=true`: the commit, each file's size and LFS SHA-256) and a
//! file's bytes (`/{repo}/resolve/{commit}/{file}`, redirected to its blob,
//! ranges honoured). `HF_ENDPOINT` and `HF_TOKEN` as both honour them.

use std::time::Duration;

use serde::Deserialize;

/// Where the hub is and who asks.
#[derive(Clone)]
pub struct Hub {
    pub(super) http: reqwest::Client,
    pub endpoint: String,
    pub(super) token: Option<String>,
}

/// A repository's files at one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub repo: String,
    pub commit: String,
    pub files: Vec<RemoteFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RemoteFile {
    #[serde(rename = "rfilename")]
    pub name: String,
    #[serde(default)]
    pub size: Option<u64>,
    /// Git's id of the file (small files are stored under it).
    #[serde(default, rename = "blobId")]
    pub blob_id: Option<String>,
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Lfs {
    pub sha256: String,
    pub size: u64,
}

impl RemoteFile {
    /// The name of its blob in the cache: the LFS SHA-256, else git's id
    /// (huggingface_hub's rule: the ETag the hub sends for it).
    pub fn blob_name(&self) -> Option<&str> {
        self.lfs.as_ref().map(|l| l.sha256.as_str()).or(self.blob_id.as_deref())
    }

    pub fn expected_size(&self) -> Option<u64> {
        self.lfs.as_ref().map(|l| l.size).or(self.size)
    }
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<RemoteFile>,
}

impl Hub {
    /// `HF_ENDPOINT` (default https://huggingface.co) and `HF_TOKEN` (or
    /// `HUGGING_FACE_HUB_TOKEN`) of this process.
    pub fn from_env() -> Result<Hub, String> {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into());
        Hub::new(&endpoint, var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")))
    }

    pub fn new(endpoint: &str, token: Option<String>) -> Result<Hub, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("vram-llm/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20))
            // Between two reads of a body, not the whole download.
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        Ok(Hub { http, endpoint: endpoint.trim_end_matches('/').to_string(), token })
    }

    pub(super) fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(url);
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// The files of `repo` at `revision` (a branch, tag or commit).
    pub async fn listing(&self, repo: &str, revision: &str) -> Result<Listing, String> {
        let url = format!("{}/api/models/{repo}/revision/{revision}?blobs=true", self.endpoint);
        let resp = self.get(&url).send().await.map_err(|e| unreachable(&self.endpoint, repo, &e))?;
        let resp = check(resp, self.token.is_some()).await.map_err(|e| format!("`{repo}`: {e}"))?;
        let body = resp.bytes().await.map_err(|e| unreachable(&self.endpoint, repo, &e))?;
        let info: RevisionInfo =
            serde_json::from_slice(&body).map_err(|e| format!("`{repo}`: the hub's file list is not what was expected: {e}"))?;
        if info.sha.len() != 40 || !info.sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{repo}`: the hub answered a commit id that is not one (`{}`)", info.sha));
        }
        Ok(Listing { repo: repo.to_string(), commit: info.sha, files: info.siblings })
    }

    pub fn file_url(&self, repo: &str, commit: &str, name: &str) -> String {
        format!("{}/{repo}/resolve/{commit}/{name}", self.endpoint)
    }
}

pub(super) fn unreachable(endpoint: &str, repo: &str, e: &reqwest::Error) -> String {
    format!("`{repo}`: cannot reach the hub at {endpoint} ({e}); with the model already downloaded, --offline (or HF_HUB_OFFLINE=1) uses the cache alone")
}

/// A non-success answer as the reason (the caller names what was asked).
pub(super) async fn check(resp: reqwest::Response, has_token: bool) -> Result<reqwest::Response, String> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let code = resp.headers().get("x-error-code").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let token_hint = if has_token { "HF_TOKEN is set but gives no access to it" } else { "set HF_TOKEN to a token that may read it" };
    Err(match (status.as_u16(), code.as_str()) {
        (_, "GatedRepo") => format!("the repository is gated (HTTP {status}): accept its terms on the hub, and {token_hint}"),
        (_, "RepoNotFound") => format!("repository not found (HTTP {status}): check the name; if it is private, {token_hint}"),
        (404, "EntryNotFound") => "no such file in the repository (HTTP 404)".to_string(),
        (404, "RevisionNotFound") => "no such revision (HTTP 404)".to_string(),
        (401, _) | (404, _) => format!("no such repository, or it is private or gated (HTTP {status}): check the name, and {token_hint}"),
        (403, _) => format!("access refused (HTTP 403): {token_hint}"),
        _ => format!("the hub answered HTTP {status}"),
    })
}
