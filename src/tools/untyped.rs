//! The answer to a request rmcp could not type: a method this server serves, whose params do
//! not fit, is Invalid params (-32602) saying what is wrong; any other method is not found.

#[allow(deprecated)] // logging/setLevel is deprecated upstream and still served
use rmcp::model::{
    CallToolRequestMethod, CallToolRequestParams, ConstString, CustomRequest, ErrorCode, ErrorData,
    InitializeRequestParams, InitializeResultMethod, ListToolsRequestMethod,
    PaginatedRequestParams, SetLevelRequestMethod, SetLevelRequestParams,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The error for `request`, which rmcp handed over untyped.
#[allow(deprecated)]
pub fn refusal(request: &CustomRequest) -> ErrorData {
    let method = request.method.as_str();
    let params = request.params.as_ref();
    let problem = match method {
        CallToolRequestMethod::VALUE => problem::<CallToolRequestParams>(params),
        InitializeResultMethod::VALUE => problem::<InitializeRequestParams>(params),
        SetLevelRequestMethod::VALUE => problem::<SetLevelRequestParams>(params),
        ListToolsRequestMethod::VALUE => problem::<Option<PaginatedRequestParams>>(params),
        _ => {
            let message = format!("method not found: {method}");
            return ErrorData::new(ErrorCode::METHOD_NOT_FOUND, message, None);
        }
    };
    ErrorData::invalid_params(format!("invalid params for {method}: {problem}"), None)
}

/// What is wrong with `params` as a `P`.
fn problem<P: DeserializeOwned>(params: Option<&Value>) -> String {
    let params = params.cloned().unwrap_or(Value::Null);
    let missing = params.is_null();
    match serde_json::from_value::<P>(params) {
        Err(_) if missing => "`params` is missing".to_owned(),
        Err(e) => e.to_string(),
        // rmcp refused them for something outside the params themselves (e.g. `_meta`).
        Ok(_) => "they do not form a valid request".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code_and_message(method: &str, params: Option<Value>) -> (i32, String) {
        let error = refusal(&CustomRequest::new(method, params));
        (error.code.0, error.message.to_string())
    }

    #[test]
    fn served_methods_with_bad_params_are_invalid_params() {
        let (code, message) = code_and_message("tools/call", None);
        assert_eq!(
            (code, message.as_str()),
            (-32602, "invalid params for tools/call: `params` is missing")
        );
        let (code, message) = code_and_message("tools/call", Some(json!({"name": 5})));
        assert_eq!(code, -32602);
        assert!(message.contains("invalid type"), "{message}");
        let (code, _) = code_and_message("tools/list", Some(json!({"cursor": 5})));
        assert_eq!(code, -32602);
        let (code, message) = code_and_message("no/such", None);
        assert_eq!(
            (code, message.as_str()),
            (-32601, "method not found: no/such")
        );
    }
}
