//! The AWS SDK configuration every AWS client of dbctl shares (Secrets
//! Manager, RDS): the provider block's region, endpoint and profile, short
//! connect timeouts, and no retries against a local stand-in.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};

use crate::model::AwsProvider;

/// The SDK configuration for `p`, each call bounded by `operation_timeout`,
/// and where the clients made from it talk to ("<service> at <endpoint>" or
/// "<service> in <region>", for messages).
pub async fn sdk_config(
    p: &AwsProvider,
    service: &str,
    operation_timeout: Duration,
) -> (aws_config::SdkConfig, String) {
    let region = p.region.clone().unwrap_or_else(|| "us-east-1".into());
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.clone()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_timeout(operation_timeout)
                .build(),
        )
        // An endpoint override is a local stand-in (moto, LocalStack): fail fast there.
        .retry_config(if p.endpoint.is_some() { RetryConfig::disabled() } else { RetryConfig::standard() });
    if let Some(ep) = &p.endpoint {
        loader = loader.endpoint_url(ep);
    }
    if let Some(profile) = &p.profile {
        loader = loader.profile_name(profile);
    }
    let place = match &p.endpoint {
        Some(ep) => format!("{service} at {ep}"),
        None => format!("{service} in {region}"),
    };
    (loader.load().await, place)
}
