//! Periodic re-checks of the tokens of open sockets. A token is verified when its websocket
//! opens; the socket then lives on, so every [`crate::Settings::recheck_interval`] the relay
//! loops check it again with the checks the HTTP token verification uses (see
//! `mender_http::auth`): not expired, and its record still in the store (useradm deletes it on
//! logout and when the user is deleted; deviceauth on rejection, dismissal, decommissioning and
//! revocation). A store error keeps the socket open (logged; checked again next time).

use std::time::Duration;

use mender_http::{DeviceAuth, UserAuth};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::Deviceconnect;

/// Why an open socket's token no longer holds (also the close reason).
pub const EXPIRED: &str = "token expired";
pub const REVOKED: &str = "unauthorized";

/// The re-check timer of one socket: first tick one interval after the socket opened.
pub fn timer(dc: &Deviceconnect) -> Interval {
    let period = dc
        .settings()
        .recheck_interval
        .max(Duration::from_millis(10));
    let mut every = tokio::time::interval_at(Instant::now() + period, period);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    every
}

fn expired(exp: Option<i64>) -> bool {
    exp.is_some_and(|exp| exp < chrono::Utc::now().timestamp())
}

/// `None` while the user's token holds, else the reason to close the session.
pub async fn user(dc: &Deviceconnect, auth: &UserAuth) -> Option<&'static str> {
    if expired(auth.claims.exp) {
        return Some(EXPIRED);
    }
    let Some(check) = dc.services.auth.users.as_ref() else {
        tracing::error!("user token check not configured");
        return None;
    };
    match check.user_token_valid(&auth.claims).await {
        Ok(true) => None,
        Ok(false) => Some(REVOKED),
        Err(e) => {
            tracing::warn!(user_id = %auth.user_id(), error = %e.message, "re-checking a user token");
            None
        }
    }
}

/// `None` while the device's token holds, else the reason to close its socket.
pub async fn device(dc: &Deviceconnect, auth: &DeviceAuth) -> Option<&'static str> {
    if expired(Some(auth.claims.exp)) {
        return Some(EXPIRED);
    }
    let Some(check) = dc.services.auth.devices.as_ref() else {
        tracing::error!("device token check not configured");
        return None;
    };
    match check.device_token_valid(&auth.claims).await {
        Ok(true) => None,
        Ok(false) => Some(REVOKED),
        Err(e) => {
            tracing::warn!(device_id = %auth.device_id(), error = %e.message, "re-checking a device token");
            None
        }
    }
}
