//! `GET /v1/label-sets`: the label sets the platform knows, so clients
//! (the web app's label picker) never keep a copy of their own.

use axum::Json;
use cxr_platform::domain::{LabelSet, LabelSets};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::state::AppState;

/// Every label set, labels in their dataset order (`vinbigdata`: the
/// annotation classes; `torchxrayvision-all`: the model's outputs).
#[utoipa::path(get, path = "/v1/label-sets", operation_id = "list_label_sets", tag = "annotations",
    responses(
        (status = 200, description = "The label sets", body = Vec<LabelSet>),
    ))]
pub async fn list(_caller: Caller) -> Json<Vec<LabelSet>> {
    Json(LabelSets::builtin().iter().cloned().collect())
}

/// This module's routes (merged with the others in [`crate::app::routes`]).
pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(routes!(list))
}
