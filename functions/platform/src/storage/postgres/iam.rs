//! RDS IAM authentication: the password of each new connection is a
//! SigV4-signed token (aws-sdk-rds's `AuthTokenGenerator`) valid for 15
//! minutes, so the functions hold no database password; RDS Proxy requires
//! TLS, verified against the public roots its ACM certificate chains to.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::DbError;

/// Well inside a token's 15 minutes: connections opened after a renewal
/// never present an expired token.
const RENEW_EVERY: Duration = Duration::from_secs(10 * 60);

pub(super) struct IamLogin {
    sdk: SdkConfig,
    generator: AuthTokenGenerator,
    host: String,
    port: u16,
    database: String,
    user: String,
}

impl IamLogin {
    pub(super) fn new(sdk: SdkConfig, host: &str, port: u16, database: &str, user: &str) -> Result<Self, DbError> {
        let config = Config::builder().hostname(host).port(u64::from(port)).username(user).build().map_err(|e| DbError::InvalidUrl(e.to_string()))?;
        Ok(Self { sdk, generator: AuthTokenGenerator::new(config), host: host.into(), port, database: database.into(), user: user.into() })
    }

    /// Connection options with a fresh token.
    pub(super) async fn options(&self) -> Result<PgConnectOptions, DbError> {
        let token = self.generator.auth_token(&self.sdk).await.map_err(|e| DbError::LoginRefused(format!("no IAM token for {}: {e}", self.user)))?;
        Ok(PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .database(&self.database)
            .username(&self.user)
            .password(token.as_str())
            .ssl_mode(PgSslMode::VerifyFull))
    }

    /// Renews the pool's login every [`RENEW_EVERY`] until the pool closes.
    pub(super) fn renew_in_background(self, pool: PgPool) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if pool.is_closed() {
                    return;
                }
                match self.options().await {
                    Ok(options) => pool.set_connect_options(options),
                    // The previous token still opens connections for a few
                    // minutes; the next round tries again.
                    Err(err) => tracing::warn!(error = %err, "renewing the database IAM token failed"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_rds::config::Credentials;

    #[tokio::test]
    async fn the_password_is_a_signed_token_for_this_user_and_tls_is_verified() {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).region(Region::new("eu-west-1")).credentials_provider(Credentials::for_tests()).load().await;
        let login = IamLogin::new(sdk, "cxr-dev.proxy-abc.eu-west-1.rds.amazonaws.com", 5432, "cxr", "cxr").expect("login");
        let options = login.options().await.expect("options");
        assert_eq!(options.get_host(), "cxr-dev.proxy-abc.eu-west-1.rds.amazonaws.com");
        assert_eq!((options.get_port(), options.get_username(), options.get_database()), (5432, "cxr", Some("cxr")));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
        let token = login.generator.auth_token(&login.sdk).await.expect("token").to_string();
        assert!(token.starts_with("cxr-dev.proxy-abc.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=cxr&"), "{token}");
        assert!(token.contains("X-Amz-Signature=") && token.contains("X-Amz-Expires=900"), "{token}");
    }
}
