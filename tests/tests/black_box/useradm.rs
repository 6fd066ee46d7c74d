//! useradm through the HTTP API: login (Basic auth, raw JWT), users CRUD with upstream's rules,
//! password change needing the current password (and revoking the user's other tokens),
//! logout, personal access tokens as bearer tokens, settings with `If-Match` etags.

use black_box_tests::json_of;
use black_box_tests::mgmt::{https_client, location};
use black_box_tests::{Mgmt, TestStack};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_login_logout_tokens_and_settings() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let http = https_client(&stack.ca_cert())?;
    let login = |email: &'static str, password: &'static str| {
        let http = http.clone();
        let url = format!("{}/api/management/v1/useradm/auth/login", stack.url());
        async move {
            http.post(url)
                .basic_auth(email, Some(password))
                .send()
                .await
        }
    };

    // Bad logins.
    let r = login("admin@example.com", "wrong-password").await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await?["error"], "unauthorized");
    let r = http
        .post(format!(
            "{}/api/management/v1/useradm/auth/login",
            stack.url()
        ))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Creating users.
    let (status, headers, _) = admin
        .request(
            Method::POST,
            "/api/management/v1/useradm/users",
            Some(json!({"email": "Ops@Example.com", "password": "ops-password-1"})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let location = location(&headers);
    assert!(
        location.starts_with("/api/management/v1/useradm/users/"),
        "{location}"
    );
    let ops_id = location.rsplit('/').next().unwrap_or_default().to_owned();
    for (payload, expected, message) in [
        (
            json!({"email": "ops@example.com", "password": "another-pass-1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "user with a given email already exists",
        ),
        (
            json!({"email": "short@example.com", "password": "short"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "password: must be minimum 8 characters long",
        ),
        (
            json!({"email": "not-an-email", "password": "long-enough-1"}),
            StatusCode::BAD_REQUEST,
            "email: must be a valid email address.",
        ),
    ] {
        let (status, _, b) = admin
            .request(
                Method::POST,
                "/api/management/v1/useradm/users",
                Some(payload),
            )
            .await?;
        assert_eq!(
            (status, json_of(&b)["error"].as_str().unwrap_or_default()),
            (expected, message)
        );
    }
    let (_, _, list) = admin
        .request(Method::GET, "/api/management/v1/useradm/users", None)
        .await?;
    let list = json_of(&list);
    let emails: Vec<&str> = list
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["email"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        emails.contains(&"ops@example.com") && emails.contains(&"admin@example.com"),
        "{emails:?}"
    );

    // The new user: login, me, password change rules.
    let ops = Mgmt::login(
        stack.url(),
        &stack.ca_cert(),
        "ops@example.com",
        "ops-password-1",
    )
    .await?;
    let second_session = Mgmt::login(
        stack.url(),
        &stack.ca_cert(),
        "ops@example.com",
        "ops-password-1",
    )
    .await?;
    let (status, _, me) = ops
        .request(Method::GET, "/api/management/v1/useradm/users/me", None)
        .await?;
    assert_eq!(
        (status, json_of(&me)["id"].as_str().unwrap_or_default()),
        (StatusCode::OK, ops_id.as_str())
    );
    let (status, _, b) = ops
        .request(
            Method::PUT,
            "/api/management/v1/useradm/users/me",
            Some(json!({"password": "ops-password-2"})),
        )
        .await?;
    assert_eq!(
        (status, json_of(&b)["error"].as_str().unwrap_or_default()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "current password mismatch"
        )
    );
    let (status, _, _) = ops
        .request(
            Method::PUT,
            "/api/management/v2/useradm/users/me",
            Some(json!({"password": "ops-password-2", "current_password": "ops-password-1"})),
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        login("ops@example.com", "ops-password-1").await?.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login("ops@example.com", "ops-password-2").await?.status(),
        StatusCode::OK
    );
    // The token used for the change survives; the user's other sessions are revoked.
    assert_eq!(
        ops.request(Method::GET, "/api/management/v1/useradm/users/me", None)
            .await?
            .0,
        StatusCode::OK
    );
    assert_eq!(
        second_session
            .request(Method::GET, "/api/management/v1/useradm/users/me", None)
            .await?
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Changing another user's password is refused.
    let (status, _, _) = ops
        .request(
            Method::PUT,
            &format!(
                "/api/management/v1/useradm/users/{}",
                admin_id(&admin).await?
            ),
            Some(json!({"password": "hijacked-pass"})),
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Personal access tokens work as bearer tokens until deleted.
    let (status, headers, pat) = ops
        .request(
            Method::POST,
            "/api/management/v1/useradm/settings/tokens",
            Some(json!({"name": "ci", "expires_in": 3600})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/jwt")
    );
    let pat = String::from_utf8(pat.to_vec())?;
    let with_pat = Mgmt::with_token(stack.url(), &stack.ca_cert(), &pat)?;
    assert_eq!(
        with_pat
            .request(Method::GET, "/api/management/v1/useradm/users/me", None)
            .await?
            .0,
        StatusCode::OK
    );
    let (status, _, _) = ops
        .request(
            Method::POST,
            "/api/management/v1/useradm/settings/tokens",
            Some(json!({"name": "ci", "expires_in": 0})),
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, _, tokens) = ops
        .request(
            Method::GET,
            "/api/management/v1/useradm/settings/tokens",
            None,
        )
        .await?;
    let tokens = json_of(&tokens);
    assert_eq!(tokens.as_array().map(Vec::len), Some(1));
    assert_eq!(tokens[0]["name"], "ci");
    let pat_id = tokens[0]["id"].as_str().unwrap_or_default().to_owned();
    let (status, _, _) = ops
        .request(
            Method::DELETE,
            &format!("/api/management/v1/useradm/settings/tokens/{pat_id}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        with_pat
            .request(Method::GET, "/api/management/v1/useradm/users/me", None)
            .await?
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Settings with etags.
    let (status, _, _) = ops
        .request(
            Method::POST,
            "/api/management/v1/useradm/settings/me",
            Some(json!({"theme": "dark"})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let (_, headers, settings) = ops
        .request(Method::GET, "/api/management/v1/useradm/settings/me", None)
        .await?;
    assert_eq!(json_of(&settings), json!({"theme": "dark"}));
    let etag = headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(!etag.is_empty());
    let conditional = |etag: String| {
        let http = http.clone();
        let url = format!("{}/api/management/v1/useradm/settings/me", stack.url());
        let token = ops.token().to_owned();
        async move {
            http.post(url)
                .bearer_auth(token)
                .header("if-match", etag)
                .json(&json!({"theme": "light"}))
                .send()
                .await
        }
    };
    let r = conditional("not-the-etag".into()).await?;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        ops.request(Method::GET, "/api/management/v1/useradm/settings/me", None)
            .await?
            .2,
        settings
    );
    assert_eq!(conditional(etag).await?.status(), StatusCode::CREATED);

    // Logout revokes the token; deleting the user revokes everything.
    let (status, _, _) = ops
        .request(Method::POST, "/api/management/v1/useradm/auth/logout", None)
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        ops.request(Method::GET, "/api/management/v1/useradm/users/me", None)
            .await?
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _, _) = admin
        .request(
            Method::DELETE,
            &format!("/api/management/v1/useradm/users/{ops_id}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        login("ops@example.com", "ops-password-2").await?.status(),
        StatusCode::UNAUTHORIZED
    );
    stack.stop().await;
    Ok(())
}

async fn admin_id(admin: &Mgmt) -> anyhow::Result<String> {
    let (_, _, me) = admin
        .request(Method::GET, "/api/management/v1/useradm/users/me", None)
        .await?;
    Ok(json_of(&me)["id"].as_str().unwrap_or_default().to_owned())
}

/// `POST /auth/login` with HTTP Basic: the status and the body.
async fn login_status(
    stack: &TestStack,
    email: &str,
    password: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let r = https_client(&stack.ca_cert())?
        .post(format!(
            "{}/api/management/v1/useradm/auth/login",
            stack.url()
        ))
        .basic_auth(email, Some(password))
        .send()
        .await?;
    let status = r.status();
    Ok((status, json_of(&r.bytes().await?)))
}

/// The stack's useradm as another instance would have it: its own DynamoDB client, nothing
/// shared in memory.
async fn another_useradm(stack: &TestStack, bcrypt_cost: u32) -> useradm::Useradm {
    let services = &stack.stack.services;
    useradm::Useradm {
        store: useradm::DynamoStore::new(
            mender_aws::dynamodb(&mender_aws::load_sdk_config().await),
            &services.config.useradm_table,
        ),
        keys: services.keys.clone(),
        token_lifetime_secs: 3600,
        bcrypt_cost,
    }
}

/// Failed logins of one e-mail are counted in the table: past the limit every instance
/// answers 429 (even to the right password) for the rest of the window; other e-mails log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_on_every_instance() -> anyhow::Result<()> {
    use black_box_tests::stack::{ADMIN_EMAIL, ADMIN_PASSWORD};
    let stack = TestStack::start().await?;
    // 10 failures per e-mail and 15-minute window (useradm::service::LOGIN_FAILURES_ALLOWED)
    for _ in 0..10 {
        let (status, _) = login_status(&stack, ADMIN_EMAIL, "wrong-password").await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, b) = login_status(&stack, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(
        b["error"],
        "too many failed login attempts, try again later"
    );
    assert!(b["request_id"].is_string());
    let other = another_useradm(&stack, 4).await;
    let refused = other.login(ADMIN_EMAIL, ADMIN_PASSWORD, false).await.err();
    assert_eq!(
        refused.map(|e| mender_http::ApiError::from(e).status),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    // the e-mail is what is throttled: another account logs in
    other
        .create_user("", "second@example.com", "second-password-1")
        .await?;
    let (status, _) = login_status(&stack, "second@example.com", "second-password-1").await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

/// An unknown e-mail is checked against a decoy hash of the same cost: it answers no faster
/// than a wrong password (cost 10: about 50 ms of bcrypt each; without the decoy an unknown
/// e-mail answers after one read, well under a tenth of that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_emails_take_as_long_as_wrong_passwords() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let ua = another_useradm(&stack, 10).await;
    ua.create_user("", "timing@example.com", "timing-password-1")
        .await?;
    let time = |email: &'static str| {
        let ua = ua.clone();
        async move {
            let start = std::time::Instant::now();
            let result = ua.login(email, "wrong-password", false).await;
            assert!(
                matches!(result, Err(useradm::Error::Unauthorized(_))),
                "{result:?}"
            );
            start.elapsed()
        }
    };
    time("nobody@example.com").await; // the decoy is made once per instance
    let (mut wrong, mut unknown) = (std::time::Duration::MAX, std::time::Duration::MAX);
    for _ in 0..3 {
        wrong = wrong.min(time("timing@example.com").await);
        unknown = unknown.min(time("nobody@example.com").await);
    }
    assert!(
        unknown * 3 >= wrong,
        "unknown e-mail {unknown:?}, wrong password {wrong:?}"
    );
    Ok(())
}

/// bcrypt reads 72 bytes: a longer password is refused (400), not cut; a personal access
/// token cannot create personal access tokens (403), a login token can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_passwords_and_tokens_from_tokens_are_refused() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let long = "p".repeat(73);
    let (status, _, b) = admin
        .request(
            Method::POST,
            "/api/management/v1/useradm/users",
            Some(json!({"email": "long@example.com", "password": long})),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(&b)["error"],
        "password: must be at most 72 characters (bcrypt)"
    );
    let (status, _, _) = admin
        .request(
            Method::POST,
            "/api/management/v1/useradm/users",
            Some(json!({"email": "long@example.com", "password": "p".repeat(72)})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = login_status(&stack, "long@example.com", &"p".repeat(73)).await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "not cut to the 72 that match"
    );

    const TOKENS: &str = "/api/management/v1/useradm/settings/tokens";
    let (status, _, pat) = admin
        .request(
            Method::POST,
            TOKENS,
            Some(json!({"name": "ci", "expires_in": 3600})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    let with_pat = Mgmt::with_token(stack.url(), &stack.ca_cert(), std::str::from_utf8(&pat)?)?;
    let (status, _, b) = with_pat
        .request(
            Method::POST,
            TOKENS,
            Some(json!({"name": "forever", "expires_in": 0})),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(json_of(&b)["request_id"].is_string());
    let (_, _, list) = admin.request(Method::GET, TOKENS, None).await?;
    assert_eq!(json_of(&list).as_array().map(Vec::len), Some(1));
    Ok(())
}
