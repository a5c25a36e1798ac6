//! The OpenAPI schemas of second-factor input that derive cannot express: the
//! code patterns and [`FactorInput`]'s three shapes.

use serde_json::json;
use utoipa::ToSchema;

use super::flow::FactorInput;

/// A TOTP code as the server takes it: six digits, whitespace anywhere
/// ignored (`totp::parse_code`); the pattern is in `http::apidoc::PATTERNS`.
const TOTP_CODE_PATTERN: &str = "@totp-code";
/// A recovery code as the server takes it: ten characters of its alphabet in
/// either case, whitespace and `-` anywhere ignored (`store::normalize`).
const RECOVERY_CODE_PATTERN: &str = "@recovery-code";

/// A string schema matching `pattern`.
fn code_schema(pattern: &str, description: &str) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .build()
}

pub fn totp_code_schema() -> utoipa::openapi::Object {
    code_schema(TOTP_CODE_PATTERN, "The six digits the authenticator app shows (spaces allowed)")
}

pub fn recovery_code_schema() -> utoipa::openapi::Object {
    code_schema(RECOVERY_CODE_PATTERN, "One of the account's unused recovery codes, such as `abcde-fgh23`")
}

/// [`FactorInput`] is one of three shapes, told apart by `method`: a TOTP
/// code (`method` may be left out), a recovery code, or a passkey's assertion.
/// Any other combination is refused with 422; a code of the right shape that
/// does not match answers 401.
impl utoipa::PartialSchema for FactorInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{
            ObjectBuilder, OneOfBuilder, RefOr, Type,
            schema::{AdditionalProperties, Schema},
        };
        let method = |name: &str| -> RefOr<Schema> {
            let schema = ObjectBuilder::new().schema_type(Type::String).enum_values(Some([name]));
            if name == "totp" { schema.default(Some(json!("totp"))).into() } else { schema.into() }
        };
        let null = || -> RefOr<Schema> { ObjectBuilder::new().schema_type(Type::Null).into() };
        let credential = ObjectBuilder::new().schema_type(Type::Object).description(Some(
            "The browser's `PublicKeyCredential` (WebAuthn JSON), after a `…/webauthn/start` of this session",
        ));
        let branch = |method: RefOr<Schema>, code: RefOr<Schema>, credential: RefOr<Schema>, required: &[&str]| {
            let mut object = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("method", method)
                .property("code", code)
                .property("credential", credential)
                .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
            for field in required {
                object = object.required(*field);
            }
            object.build()
        };
        OneOfBuilder::new()
            .item(branch(method("totp"), totp_code_schema().into(), null(), &["code"]))
            .item(branch(method("recovery"), recovery_code_schema().into(), null(), &["method", "code"]))
            .item(branch(method("webauthn"), null(), credential.into(), &["method", "credential"]))
            .description(Some(
                "A second factor: `{method: \"totp\", code}` (`method` may be left out), `{method: \"recovery\", \
                 code}` or `{method: \"webauthn\", credential}`",
            ))
            .into()
    }
}

impl ToSchema for FactorInput {
    fn name() -> std::borrow::Cow<'static, str> {
        "FactorInput".into()
    }
}
