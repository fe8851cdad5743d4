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
            if !dir.exists() {
                // Only its owner enters a backup folder dbctl creates.
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| e.to_string())?;
            (Arc::new(PrivateFiles(Arc::new(fs))), String::new())
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

/// A local folder whose files are written mode 0600: backups hold every row
/// of a database, and a shared machine's other users must not read them.
#[derive(Debug)]
struct PrivateFiles(Arc<object_store::local::LocalFileSystem>);

impl std::fmt::Display for PrivateFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn restrict(fs: &object_store::local::LocalFileSystem, location: &Path) -> object_store::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let file = fs.path_to_filesystem(location)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(|e| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{}: {e}", file.display()).into(),
    })
}

#[derive(Debug)]
struct PrivateUpload {
    inner: Box<dyn object_store::MultipartUpload>,
    fs: Arc<object_store::local::LocalFileSystem>,
    location: Path,
}

#[async_trait::async_trait]
impl object_store::MultipartUpload for PrivateUpload {
    fn put_part(&mut self, data: object_store::PutPayload) -> object_store::UploadPart {
        self.inner.put_part(data)
    }
    async fn complete(&mut self) -> object_store::Result<object_store::PutResult> {
        let r = self.inner.complete().await?;
        restrict(&self.fs, &self.location)?;
        Ok(r)
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait::async_trait]
impl ObjectStore for PrivateFiles {
    async fn put_opts(
        &self,
        location: &Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        let r = self.0.put_opts(location, payload, opts).await?;
        restrict(&self.0, location)?;
        Ok(r)
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        let inner = self.0.put_multipart_opts(location, opts).await?;
        Ok(Box::new(PrivateUpload { inner, fs: self.0.clone(), location: location.clone() }))
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: object_store::CopyOptions) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await?;
        restrict(&self.0, to)
    }
}
