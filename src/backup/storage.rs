//! Where backups live: `file://DIR` (relative to the configuration),
//! `s3://bucket/prefix` (with `provider "aws"`: region, endpoint override,
//! credentials from the AWS chain, profiles and SSO included), `gs://` and
//! `az://` — all through the object_store crate.

use std::path::Path as FsPath;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::path::Path;
use object_store::ObjectStore;

use crate::model::AwsProvider;

pub struct Storage {
    pub url: String,
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
}

/// object_store's own AWS credential lookup skips profiles and SSO; this asks
/// aws-config's default chain instead.
#[derive(Debug)]
struct AwsChain(aws_credential_types::provider::SharedCredentialsProvider);

#[async_trait::async_trait]
impl object_store::CredentialProvider for AwsChain {
    type Credential = AwsCredential;
    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        use aws_credential_types::provider::ProvideCredentials;
        let c = self.0.provide_credentials().await.map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: format!("no AWS credentials: {e}").into(),
        })?;
        Ok(Arc::new(AwsCredential {
            key_id: c.access_key_id().to_string(),
            secret_key: c.secret_access_key().to_string(),
            token: c.session_token().map(str::to_string),
        }))
    }
}

fn split(rest: &str) -> (String, String) {
    match rest.split_once('/') {
        Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
        None => (rest.to_string(), String::new()),
    }
}

impl Storage {
    pub async fn open(url: &str, base_dir: &FsPath, aws: Option<&AwsProvider>) -> Result<Storage, String> {
        let (store, prefix): (Arc<dyn ObjectStore>, String) = if let Some(dir) = url.strip_prefix("file://") {
            let dir = base_dir.join(dir);
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| e.to_string())?;
            (Arc::new(fs), String::new())
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = split(rest);
            let p = aws.cloned().unwrap_or_default();
            let region = p.region.clone().unwrap_or_else(|| "us-east-1".into());
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(region.clone()));
            if let Some(profile) = &p.profile {
                loader = loader.profile_name(profile);
            }
            let conf = loader.load().await;
            let creds = conf.credentials_provider().ok_or("no AWS credential provider")?;
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(&bucket)
                .with_region(&region)
                .with_credentials(Arc::new(AwsChain(creds)));
            if let Some(ep) = &p.endpoint {
                // A local stand-in (moto, MinIO): path-style requests, plain HTTP allowed.
                b = b.with_endpoint(ep).with_allow_http(true).with_virtual_hosted_style_request(false);
            }
            (Arc::new(b.build().map_err(|e| e.to_string())?), prefix)
        } else if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, prefix) = split(rest);
            let g = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| e.to_string())?;
            (Arc::new(g), prefix)
        } else if let Some(rest) = url.strip_prefix("az://") {
            let (container, prefix) = split(rest);
            let a = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .build()
                .map_err(|e| e.to_string())?;
            (Arc::new(a), prefix)
        } else {
            return Err(format!("unsupported storage {url}"));
        };
        Ok(Storage { url: url.to_string(), store, prefix: Path::from(prefix) })
    }

    /// `prefix/a/b/c`, each part encoded for the store.
    pub fn path(&self, parts: &[&str]) -> Path {
        parts.iter().fold(self.prefix.clone(), |p, x| p.clone().join(*x))
    }
}
