//! API keys for programs (seed 003): `Authorization: Bearer ffk_…`.
//!
//! A key is `ffk_` + hex(32 random bytes ‖ the tenant's id) + `_` + hex of the
//! CRC-32 of what precedes it. The prefix lets secret scanners find leaked keys;
//! the checksum refuses a mistyped key without a database read; the tenant
//! lets the request open in its tenant like a session cookie does. Only the
//! SHA-256 is stored, with the first characters for display.
//!
//! A key acts as its owner with the intersection of its own `permissions` and
//! the owner's grants *at each request*, under the owner's clearance; a
//! suspended or deleted owner's keys stop at the next request. Keys reach API
//! routes only: no pages, no step-up, no step-up operations (the route guard
//! refuses them), and every audit row of a key's request names the key.

use std::fmt;

use ring::{
    digest,
    rand::{SecureRandom, SystemRandom},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Authenticated;
use crate::{
    audit::{self, Action, Entry, Outcome, Source},
    authz::{Permission, Scope},
    db::TenantTx,
    http::{AppState, error::AppError},
};

const PREFIX: &str = "ffk_";
const RANDOM_LEN: usize = 32;
/// Characters of a key kept for display (`ffk_` and the first 8 hex digits).
const SHOWN: usize = 12;

/// A key as presented. Its `Debug` shows only the displayable prefix.
pub struct Presented {
    pub tenant: Uuid,
    hash: Vec<u8>,
    shown: String,
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Presented({}…)", self.shown)
    }
}

fn crc(text: &str) -> String {
    format!("{:08x}", crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(text.as_bytes()))
}

fn hash(key: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, key.as_bytes()).as_ref().to_vec()
}

/// A fresh key for `tenant`: the text (shown once), its hash and its display prefix.
fn generate(tenant: Uuid) -> anyhow::Result<(zeroize::Zeroizing<String>, Vec<u8>, String)> {
    let mut random = zeroize::Zeroizing::new([0u8; RANDOM_LEN]);
    SystemRandom::new().fill(random.as_mut()).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let body = format!("{PREFIX}{}{}", hex::encode(random.as_ref()), tenant.simple());
    let key = zeroize::Zeroizing::new(format!("{body}_{}", crc(&body)));
    let shown = key[..SHOWN].to_string();
    Ok((key.clone(), hash(&key), shown))
}

/// Parses a presented key; `None` for anything that is not one (wrong prefix,
/// length, digits or checksum), decided without the database.
pub fn parse(text: &str) -> Option<Presented> {
    let rest = text.strip_prefix(PREFIX)?;
    let (body_hex, check) = rest.split_once('_')?;
    if body_hex.len() != 2 * RANDOM_LEN + 32 || check.len() != 8 || !body_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if !crc(&text[..PREFIX.len() + body_hex.len()]).eq_ignore_ascii_case(check) {
        return None;
    }
    let tenant = Uuid::try_parse(&body_hex[2 * RANDOM_LEN..]).ok()?;
    Some(Presented { tenant, hash: hash(text), shown: text[..SHOWN].to_string() })
}

impl Presented {
    pub fn hash(&self) -> &[u8] {
        &self.hash
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// A key as its owner (or an administrator) sees it.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    /// The key's first characters (`ffk_` and 8 hex digits), for display.
    pub prefix: String,
    /// `permission: scope`; `null`: everything the owner holds.
    #[sqlx(skip)]
    #[schema(schema_with = permissions_schema, required = true)]
    pub permissions: Option<Map<String, Value>>,
    #[serde(skip)]
    #[sqlx(rename = "permissions")]
    pub grants: Option<Vec<String>>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub last_used_at: Option<OffsetDateTime>,
}

/// A new key as `POST /me/api-keys` answers it: the view and, this once, the key.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: ApiKeyView,
    /// The key itself (`Authorization: Bearer ffk_…`); it is not shown again.
    #[schema(pattern = r"^ffk_[0-9a-f]{96}_[0-9a-f]{8}$")]
    pub key: String,
}

/// A new key. `permissions` narrows what it may do: each permission must be one
/// the caller holds at that scope or wider, which a schema cannot say (422).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewKey {
    /// 1 to 100 characters once trimmed, without control characters.
    #[schema(pattern = "@text-100")]
    pub name: String,
    /// In the future and at most `FORTIFILE_API_KEY_MAX_DAYS` (default 365)
    /// days ahead, else 422; absent or `null`: that maximum.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// `{"file.download": "own", …}`; absent: everything the owner holds.
    #[serde(default)]
    #[schema(schema_with = permissions_schema)]
    pub permissions: Option<Map<String, Value>>,
}

/// `{permission: scope}` with the permissions and scopes there are, or `null`
/// (everything the owner holds).
fn permissions_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type, schema::SchemaType};
    let names = Permission::ALL.iter().map(|p| p.as_str());
    let scopes = [Scope::Own, Scope::Department, Scope::Tenant].map(Scope::as_str);
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .description(Some(
            "`{\"file.download\": \"own\", …}`: a scope per permission; `null`: everything the owner holds",
        ))
        .property_names(Some(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names))))
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(scopes))))
        .build()
}

/// Creates a key for the caller; its text is in the answer only.
pub async fn create(
    state: &AppState,
    source: &Source,
    mut tx: TenantTx,
    who: &Authenticated,
    subject: &crate::authz::Subject,
    input: NewKey,
) -> Result<(ApiKeyView, zeroize::Zeroizing<String>), AppError> {
    let name = crate::directory::clean_name("name", &input.name, 100)?;
    let now = state.clock.now();
    let max = now + time::Duration::days(state.config.api_key_max_days.into());
    let expires_at = input.expires_at.unwrap_or(max);
    if expires_at <= now || expires_at > max {
        let days = state.config.api_key_max_days;
        return Err(AppError::invalid("expiresAt", format!("must be in the future and at most {days} days ahead")));
    }
    let grants = match &input.permissions {
        None => None,
        Some(map) => {
            let mut grants = Vec::new();
            for (name, scope) in map {
                let permission = Permission::parse(name)
                    .ok_or_else(|| AppError::invalid("permissions", format!("unknown permission {name:?}")))?;
                let scope = scope.as_str().and_then(Scope::parse).ok_or_else(|| {
                    AppError::invalid("permissions", format!("{name}: expected own, department or tenant"))
                })?;
                if !subject.may_delegate(permission, scope) {
                    return Err(AppError::invalid("permissions", format!("you do not hold {name} at {scope:?}")));
                }
                grants.push(format!("{}:{}", permission.as_str(), scope.as_str()));
            }
            Some(grants)
        }
    };
    let (key, key_hash, prefix) = generate(who.tenant_id)?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO api_keys (tenant_id, user_id, name, key_hash, prefix, permissions, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(who.tenant_id)
    .bind(who.user_id)
    .bind(&name)
    .bind(&key_hash)
    .bind(&prefix)
    .bind(&grants)
    .bind(now)
    .bind(expires_at)
    .fetch_one(tx.conn())
    .await?;
    let entry = Entry::new(Action::ApiKeyCreate, Outcome::Success).target("api_key", id).details(json!({
        "name": name, "prefix": prefix, "permissions": grants, "expiresAt": expires_at.unix_timestamp()
    }));
    audit::record(&mut tx, source, entry).await?;
    let view = one(&mut tx, who.user_id, id).await?.ok_or(AppError::NotFound)?;
    tx.commit().await?;
    Ok((view, key))
}

fn shape(mut view: ApiKeyView) -> ApiKeyView {
    view.permissions = view.grants.as_ref().map(|grants| {
        grants.iter().filter_map(|g| g.split_once(':')).map(|(p, s)| (p.to_string(), Value::from(s))).collect()
    });
    view
}

const KEY_SELECT: &str = "SELECT id, name, prefix, permissions, created_at, expires_at, last_used_at FROM api_keys \
                          WHERE user_id = $1 AND revoked_at IS NULL";

async fn one(tx: &mut TenantTx, user: Uuid, id: Uuid) -> Result<Option<ApiKeyView>, sqlx::Error> {
    let sql = "SELECT id, name, prefix, permissions, created_at, expires_at, last_used_at FROM api_keys \
               WHERE user_id = $1 AND revoked_at IS NULL AND id = $2";
    Ok(sqlx::query_as(sql).bind(user).bind(id).fetch_optional(tx.conn()).await?.map(shape))
}

/// `user`'s keys that have not been revoked, oldest first.
pub async fn list(tx: &mut TenantTx, user: Uuid) -> Result<Vec<ApiKeyView>, sqlx::Error> {
    let rows: Vec<ApiKeyView> = sqlx::query_as(KEY_SELECT).bind(user).fetch_all(tx.conn()).await?;
    Ok(rows.into_iter().map(shape).collect())
}

/// Revokes every key of `user` (their password changed, or their factors were
/// reset: whoever had the account may have made keys); how many.
pub async fn revoke_all(
    tx: &mut TenantTx,
    source: &Source,
    user: Uuid,
    by: &str,
    now: OffsetDateTime,
) -> Result<usize, sqlx::Error> {
    let revoked: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
    )
    .bind(user)
    .bind(now)
    .fetch_all(tx.conn())
    .await?;
    for id in &revoked {
        let entry = Entry::new(Action::ApiKeyRevoke, Outcome::Success)
            .target("api_key", id)
            .details(json!({ "owner": user, "by": by }));
        audit::record(tx, source, entry).await?;
    }
    Ok(revoked.len())
}

/// Revokes `user`'s key `id` (404 when there is none); `by` says who did.
pub async fn revoke(
    tx: &mut TenantTx,
    source: &Source,
    user: Uuid,
    id: Uuid,
    by: &str,
    now: OffsetDateTime,
) -> Result<(), AppError> {
    let prefix: Option<String> = sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING prefix",
    )
    .bind(id)
    .bind(user)
    .bind(now)
    .fetch_optional(tx.conn())
    .await?;
    let Some(prefix) = prefix else { return Err(AppError::NotFound) };
    let entry = Entry::new(Action::ApiKeyRevoke, Outcome::Success)
        .target("api_key", id)
        .details(json!({ "prefix": prefix, "owner": user, "by": by }));
    audit::record(tx, source, entry).await?;
    Ok(())
}
