//! The OpenAPI schemas of role input that derive cannot express: the kinds
//! of second factor, and a `permissions` object limited to the catalogue.

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::{
    ToSchema,
    openapi::schema::{AdditionalProperties, Object, ObjectBuilder, SchemaType, Type},
};

use crate::authz::{Permission, Scope};

/// The kinds of second factor a role may require (what `clean_mfa_type`
/// accepts), for the OpenAPI description.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase", description = "The kind of second factor a role requires.")]
pub enum MfaType {
    Totp,
    Fido2,
    Any,
}

/// The schema of a written `permissions` object: exactly the catalogue's
/// resources and actions (anything else is a 422), each `true`, `false` or a
/// scope.
pub fn permissions_schema() -> Object {
    let mut resources: BTreeMap<&str, ObjectBuilder> = BTreeMap::new();
    for permission in Permission::ALL {
        let (resource, action) = permission.as_str().split_once('.').unwrap_or((permission.as_str(), ""));
        let value = ObjectBuilder::new()
            .schema_type([Type::Boolean, Type::String].into_iter().collect::<SchemaType>())
            .enum_values(Some([
                Value::Bool(true),
                Value::Bool(false),
                Value::from(Scope::Own.as_str()),
                Value::from(Scope::Department.as_str()),
                Value::from(Scope::Tenant.as_str()),
            ]))
            .description(Some(format!(
                "`{permission}`: granted (keeping its scope, else `tenant`), not, or at this scope"
            )));
        let actions = resources.remove(resource).unwrap_or_else(|| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        });
        resources.insert(resource, actions.property(action, value));
    }
    resources
        .into_iter()
        .fold(ObjectBuilder::new().schema_type(Type::Object), |object, (resource, actions)| {
            object.property(resource, actions)
        })
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some("Permissions by resource and action: `{\"file\": {\"upload\": true, \"share\": \"own\"}}`"))
        .build()
}

/// [`permissions_schema`], or `null`.
pub fn permissions_or_null_schema() -> Object {
    let mut schema = permissions_schema();
    schema.schema_type = [Type::Object, Type::Null].into_iter().collect();
    schema
}
