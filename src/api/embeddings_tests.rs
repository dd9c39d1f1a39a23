use serde_json::json;

use super::*;

fn param(e: &ApiError) -> Option<String> {
    e.body().error.param
}

#[test]
fn every_input_shape_parses() {
    assert_eq!(parse_inputs("input", &json!("hi"), 10).unwrap(), Inputs::Texts(vec!["hi".into()]));
    assert_eq!(parse_inputs("input", &json!(["a", "b"]), 10).unwrap(), Inputs::Texts(vec!["a".into(), "b".into()]));
    assert_eq!(parse_inputs("input", &json!([1, 2, 3]), 10).unwrap(), Inputs::Tokens(vec![vec![1, 2, 3]]));
    assert_eq!(parse_inputs("input", &json!([[1], [2, 3]]), 10).unwrap(), Inputs::Tokens(vec![vec![1], vec![2, 3]]));
}

#[test]
fn empty_inputs_are_refused_naming_the_field() {
    for value in [json!(""), json!([]), json!(["a", ""]), json!([[1], []])] {
        let e = parse_inputs("input", &value, 10).unwrap_err();
        assert_eq!(e.status(), 400, "{value}");
        assert_eq!(param(&e).as_deref(), Some("input"), "{value}");
        assert!(e.to_string().contains("must not be empty"), "{e}");
    }
}

#[test]
fn wrong_shapes_and_mixes_are_refused() {
    for value in [json!(null), json!(5), json!({"a": 1}), json!(["a", 1]), json!([[1], "a"]), json!([1.5]), json!([[1, "x"]])] {
        let e = parse_inputs("content", &value, 10).unwrap_err();
        assert_eq!(param(&e).as_deref(), Some("content"), "{value}");
    }
}

#[test]
fn token_ids_outside_the_vocabulary_are_named() {
    let e = parse_inputs("input", &json!([1, 10]), 10).unwrap_err();
    assert_eq!(param(&e).as_deref(), Some("input[1]"));
    let e = parse_inputs("input", &json!([[1], [2, -1]]), 10).unwrap_err();
    assert_eq!(param(&e).as_deref(), Some("input[1][1]"));
}

#[test]
fn too_many_inputs_are_refused() {
    let many = serde_json::Value::Array(vec![json!("x"); MAX_INPUTS + 1]);
    assert_eq!(param(&parse_inputs("input", &many, 10).unwrap_err()).as_deref(), Some("input"));
}

#[test]
fn encoding_is_float_or_base64() {
    assert!(!parse_encoding(None).unwrap());
    assert!(!parse_encoding(Some("float")).unwrap());
    assert!(parse_encoding(Some("base64")).unwrap());
    assert_eq!(param(&parse_encoding(Some("hex")).unwrap_err()).as_deref(), Some("encoding_format"));
}

#[test]
fn dimensions_must_be_the_models_own() {
    assert!(check_dimensions(None, 640).is_ok());
    assert!(check_dimensions(Some(640), 640).is_ok());
    let e = check_dimensions(Some(256), 640).unwrap_err();
    assert_eq!(param(&e).as_deref(), Some("dimensions"));
    assert!(e.to_string().contains("640"), "{e}");
}

#[test]
fn long_inputs_are_refused_or_truncated() {
    let e = fit_inputs(vec![vec![1; 3], vec![1; 6]], 5, false, None, "input").unwrap_err();
    assert!(matches!(e, ApiError::ContextLengthExceeded { ref param, .. } if param == "input"), "{e:?}");
    assert!(e.to_string().contains("entry 1 has 6 tokens"), "{e}");
    assert_eq!(fit_inputs(vec![vec![1; 3], vec![2; 6]], 5, true, None, "input").unwrap(), vec![vec![1; 3], vec![2; 5]]);
    assert_eq!(param(&fit_inputs(vec![vec![]], 5, true, None, "input").unwrap_err()).as_deref(), Some("input"));
    // A cut input keeps the closing special token (SEP) the tokenizer appended.
    assert_eq!(fit_inputs(vec![vec![101, 7, 7, 7, 7, 102]], 4, true, Some(102), "input").unwrap(), vec![vec![101, 7, 7, 102]]);
    assert_eq!(fit_inputs(vec![vec![101, 7, 7, 7, 7, 7]], 4, true, Some(102), "input").unwrap(), vec![vec![101, 7, 7, 7]]);
}

#[test]
fn base64_is_little_endian_f32_with_padding() {
    // 1.0f32 = 00 00 80 3f
    assert_eq!(base64_f32(&[1.0]), "AACAPw==");
    // 1.0, -2.0 = 00 00 80 3f 00 00 00 c0
    assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
    // three floats: 12 bytes, no padding
    assert_eq!(base64_f32(&[0.0, 0.0, 0.0]), "AAAAAAAAAAAAAAAA");
    assert_eq!(base64_f32(&[]), "");
}
