//! Sign-ins of the local OpenID provider: the API verifies their JWTs as
//! API Gateway's JWT authorizer does in AWS (signature from the issuer's
//! JWKS, issuer, audience or client_id, expiry). The provider here is a
//! tiny discovery + JWKS server with a test key (tests/fixtures).

use crate::common::{ALICE, call, start_with};
use axum::routing::get;
use cxr_api::oidc::OidcSettings;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

const KEY: &str = include_str!("fixtures/oidc-test-key.pem");
const OTHER_KEY: &str = include_str!("fixtures/oidc-other-key.pem");
const JWKS: &str = include_str!("fixtures/oidc-test-jwks.json");
const CLIENT: &str = "cxr-web-test";

/// Discovery and JWKS on a random port; answers the issuer URL.
async fn provider() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", get(move || async move { axum::Json(discovery.clone()) }))
        .route("/jwks", get(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], JWKS) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

fn token(key: &str, kid: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(key.as_bytes()).expect("key")).expect("sign")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn provider_jwts_name_the_caller_as_the_authorizer_would() {
    let issuer = provider().await;
    let settings = OidcSettings { issuer: issuer.clone(), audience: CLIENT.into() };
    let (base, state) = start_with(None, |s| s.oidc = Some(settings)).await;
    let url = format!("{base}/v1/studies");
    let claims = |sub: &str, aud: &str, exp: i64| json!({"iss": issuer, "sub": sub, "aud": aud, "exp": exp, "iat": now()});

    // alice through the provider is the same caller as alice's dev token.
    let new = cxr_platform::storage::postgres::studies::NewStudy {
        owner: cxr_platform::domain::Owner::new("alice").expect("owner"),
        s3_bucket: state.images.bucket().to_owned(),
        media_type: cxr_platform::domain::MediaType::Png,
    };
    let study = state.db.create_study(&new).await.expect("study");
    let id_token = token(KEY, "test-key-1", claims("alice", CLIENT, now() + 600));
    let (status, page) = call(Method::GET, &url, Some(&id_token), None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["studies"][0]["id"].as_str(), Some(study.id.to_string().as_str()));
    let (_, by_dev_token) = call(Method::GET, &url, Some(ALICE), None).await;
    assert_eq!(page, by_dev_token);

    // A Cognito-style access token: the client in `client_id`, no `aud`.
    let access = token(KEY, "test-key-1", json!({"iss": issuer, "sub": "alice", "client_id": CLIENT, "exp": now() + 600}));
    assert_eq!(call(Method::GET, &url, Some(&access), None).await.0, 200);

    // Everything the authorizer refuses is refused here.
    let refused = [
        ("expired", token(KEY, "test-key-1", claims("alice", CLIENT, now() - 3600))),
        ("another client", token(KEY, "test-key-1", claims("alice", "someone-else", now() + 600))),
        ("another issuer", token(KEY, "test-key-1", json!({"iss": "http://evil.example", "sub": "alice", "aud": CLIENT, "exp": now() + 600}))),
        ("wrong signature", token(OTHER_KEY, "test-key-1", claims("alice", CLIENT, now() + 600))),
        ("unknown key", token(OTHER_KEY, "nobody", claims("alice", CLIENT, now() + 600))),
        ("no expiry", token(KEY, "test-key-1", json!({"iss": issuer, "sub": "alice", "aud": CLIENT}))),
        ("not a JWT", "garbage.token.here".to_owned()),
    ];
    for (what, bad) in refused {
        let (status, problem) = call(Method::GET, &url, Some(&bad), None).await;
        assert_eq!(status, 401, "{what}: {problem}");
    }
}

#[tokio::test]
async fn an_unreachable_provider_is_a_503_not_a_sign_out() {
    let issuer = format!("http://127.0.0.1:{}", cxr_platform::testing::closed_port());
    let settings = OidcSettings { issuer: issuer.clone(), audience: CLIENT.into() };
    let (base, _) = start_with(None, |s| s.oidc = Some(settings)).await;
    let id_token = token(KEY, "test-key-1", json!({"iss": issuer, "sub": "alice", "aud": CLIENT, "exp": now() + 600}));
    let (status, problem) = call(Method::GET, &format!("{base}/v1/studies"), Some(&id_token), None).await;
    assert_eq!(status, 503, "{problem}");
    // Dev tokens still work.
    assert_eq!(call(Method::GET, &format!("{base}/v1/studies"), Some(ALICE), None).await.0, 200);
}
