//! Google Cloud's Vertex AI starts a custom serving container with
//! `AIP_MODE=PREDICTION` and tells it where to listen and which routes to
//! answer (AIP_HTTP_PORT, AIP_PREDICT_ROUTE, AIP_HEALTH_ROUTE), as
//! llama-server reads them; api/vertex.rs serves the prediction route.

/// The routes Vertex AI calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexRoutes {
    /// `AIP_PREDICT_ROUTE` (default `/predict`).
    pub predict: String,
    /// `AIP_HEALTH_ROUTE`: another path for `/health`, when set.
    pub health: Option<String>,
}

/// From the environment: `None` unless `AIP_MODE` is `PREDICTION`; with it,
/// the routes and the port (`AIP_HTTP_PORT`) that replaces `--port`.
pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<(VertexRoutes, Option<u16>)>, String> {
    if env("AIP_MODE").as_deref() != Some("PREDICTION") {
        return Ok(None);
    }
    let route = |name: &str| -> Result<Option<String>, String> {
        match env(name).filter(|v| !v.is_empty()) {
            Some(path) if path.starts_with('/') => Ok(Some(path)),
            Some(path) => Err(format!("{name}={path}: a route must start with `/`")),
            None => Ok(None),
        }
    };
    let port = match env("AIP_HTTP_PORT").filter(|v| !v.is_empty()) {
        Some(p) => Some(p.parse::<u16>().map_err(|_| format!("AIP_HTTP_PORT={p}: not a port number"))?),
        None => None,
    };
    let predict = route("AIP_PREDICT_ROUTE")?.unwrap_or_else(|| "/predict".to_string());
    Ok(Some((VertexRoutes { predict, health: route("AIP_HEALTH_ROUTE")? }, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn only_prediction_mode_turns_it_on() {
        assert_eq!(from_env(env(&[("AIP_HTTP_PORT", "9000")])), Ok(None));
        let (routes, port) = from_env(env(&[("AIP_MODE", "PREDICTION")])).unwrap().unwrap();
        assert_eq!((routes.predict.as_str(), routes.health, port), ("/predict", None, None));
        let (routes, port) =
            from_env(env(&[("AIP_MODE", "PREDICTION"), ("AIP_HTTP_PORT", "9000"), ("AIP_PREDICT_ROUTE", "/v1/p"), ("AIP_HEALTH_ROUTE", "/hz")])).unwrap().unwrap();
        assert_eq!((routes.predict.as_str(), routes.health.as_deref(), port), ("/v1/p", Some("/hz"), Some(9000)));
    }

    #[test]
    fn bad_values_are_named() {
        assert!(from_env(env(&[("AIP_MODE", "PREDICTION"), ("AIP_HTTP_PORT", "x")])).unwrap_err().contains("AIP_HTTP_PORT"));
        assert!(from_env(env(&[("AIP_MODE", "PREDICTION"), ("AIP_PREDICT_ROUTE", "p")])).unwrap_err().contains("AIP_PREDICT_ROUTE"));
    }
}
