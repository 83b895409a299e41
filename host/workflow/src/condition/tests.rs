//! Unit tests of compiling, bounding and evaluating conditions.

use serde_json::json;

use super::*;

#[test]
fn finds_steps_and_variables() {
    let c = Condition::compile(
        r#"steps.route.output.label == "bug" && params.n > 2 || steps["b"].status == "ok""#,
    )
    .unwrap();
    assert_eq!(c.steps().iter().collect::<Vec<_>>(), ["b", "route"]);
    assert_eq!(
        c.variables().iter().collect::<Vec<_>>(),
        ["params", "steps"]
    );
    let c = Condition::compile("critic.issues.all(i, i.rule != 'x')").unwrap();
    assert_eq!(c.variables().iter().collect::<Vec<_>>(), ["critic"]);
}

#[test]
fn evaluates_to_booleans_only() {
    let c = Condition::compile("params.n > 2").unwrap();
    assert!(c.eval(&[("params", &json!({"n": 3}))]).unwrap());
    assert!(!c.eval(&[("params", &json!({"n": 1}))]).unwrap());
    let c =
        Condition::compile("params.n + 1 == 4 && size(params.xs) == 2 && params.f > 0.5").unwrap();
    assert!(
        c.eval(&[("params", &json!({"n": 3, "xs": [1, 2], "f": 0.75}))])
            .unwrap()
    );
    let c = Condition::compile("params.s").unwrap();
    assert!(matches!(
        c.eval(&[("params", &json!({"s": "yes"}))]),
        Err(EvalError::NotBoolean { .. })
    ));
}

#[test]
fn hostile_expressions_are_refused_not_crashing() {
    assert!(matches!(
        Condition::compile("steps.a.output.x =="),
        Err(CompileError::Syntax(_))
    ));
    let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
    assert_eq!(
        Condition::compile(&deep).unwrap_err(),
        CompileError::TooNested
    );
    assert!(Condition::compile(&"!".repeat(1000)).is_err());
    assert_eq!(
        Condition::compile(&"a".repeat(5000)).unwrap_err(),
        CompileError::TooLong { len: 5000 }
    );
    let long = vec!["a"; 500].join("+");
    assert!(matches!(
        Condition::compile(&long),
        Err(CompileError::TooDeep { .. })
    ));
}

/// The old hand-written pre-scan treated `\"` inside a raw string as an
/// escape, so everything after `r"\"` looked quoted to it: 60 levels of
/// parentheses passed a check that allowed 24, and the expression compiled.
/// The parser now counts nesting on its own tokens.
#[test]
fn raw_strings_do_not_hide_nesting() {
    let nest = |n: usize| format!("{}true{}", "(".repeat(n), ")".repeat(n));
    for raw in [r#"r"\""#, r"r'\'", r#"R"\""#, r"br'\'"] {
        let crafted = format!("{raw} == '' || {} || {raw} == ''", nest(60));
        assert_eq!(
            Condition::compile(&crafted).unwrap_err(),
            CompileError::TooNested,
            "{crafted}"
        );
        let fine = format!("{raw} != '' || {} || {raw} == ''", nest(20));
        assert!(Condition::compile(&fine).is_ok(), "{fine}");
    }
    assert!(
        CompileError::TooNested
            .to_string()
            .contains("the limit is 24")
    );
}

#[test]
fn nesting_is_bounded_exactly_at_the_limit() {
    let list = |n: usize| format!("{}1{} != []", "[".repeat(n), "]".repeat(n));
    let levels = usize::from(MAX_NESTING);
    // The whole expression is a level too, so MAX_NESTING - 1 brackets fit.
    assert!(Condition::compile(&list(levels - 1)).is_ok());
    assert_eq!(
        Condition::compile(&list(levels + 1)).unwrap_err(),
        CompileError::TooNested
    );
}

#[test]
fn trees_are_bounded_in_depth_and_size() {
    let chain = format!("a.b{} > 0", " + 1".repeat(MAX_TREE_DEPTH + 5));
    assert!(matches!(
        Condition::compile(&chain),
        Err(CompileError::TooDeep { .. })
    ));
    // Wide, shallow and short: many nodes, little depth.
    let wide = format!("[{}] != []", vec!["1"; MAX_NODES].join(","));
    assert!(wide.len() < MAX_LEN);
    assert!(matches!(
        Condition::compile(&wide),
        Err(CompileError::TooManyNodes { .. })
    ));
}

#[test]
fn the_deepest_tree_accepted_evaluates_on_a_small_stack() {
    let deepest = format!("a.b{} > 0", " + 1".repeat(MAX_TREE_DEPTH - 6));
    let c = Condition::compile(&deepest).unwrap();
    let ok = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || c.eval(&[("a", &json!({"b": 1}))]))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(ok, Ok(true));
}

#[test]
fn nested_comprehensions_over_data_are_refused_at_compile_time() {
    let bomb = "steps.a.output.xs.all(x, steps.a.output.xs.all(y, x != y))";
    match Condition::compile(bomb) {
        Err(CompileError::TooCostly { estimate }) => assert!(estimate > MAX_COST),
        other => panic!("{other:?}"),
    }
    // Over literals, nesting is only as costly as the literals are long.
    let literal = "[1, 2, 3].all(x, [4, 5].exists(y, x != y))";
    assert!(Condition::compile(literal).unwrap().estimated_cost() < 100);
    let hundred = format!(
        "[{}]",
        (0..100)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let cube = format!("{hundred}.all(a, {hundred}.all(b, {hundred}.all(c, a + b != c)))");
    assert!(matches!(
        Condition::compile(&cube),
        Err(CompileError::TooCostly { .. })
    ));
    // One loop over data is fine.
    let one = "steps.a.output.xs.exists(x, x.severity == 'high' && x.score > 3)";
    assert!(Condition::compile(one).is_ok());
}

#[test]
fn evaluation_is_metered_at_run_time() {
    // Passes the static estimate (one loop), but every iteration reads and
    // joins two 64 KiB strings: the meter stops it.
    let c = Condition::compile("params.xs.exists(x, params.s + params.s == x)").unwrap();
    let params = json!({"xs": vec![0; 5000], "s": "a".repeat(64 << 10)});
    assert_eq!(
        c.eval(&[("params", &params)]),
        Err(EvalError::CostExceeded {
            expr: c.source().to_owned()
        })
    );
    // The same over small data answers.
    let small = json!({"xs": [0, 1], "s": "ab"});
    assert_eq!(c.eval(&[("params", &small)]), Ok(false));
}

#[test]
fn map_and_filter_keep_working_under_the_meter() {
    let c = Condition::compile(
        "params.xs.map(x, x * 2).filter(y, y > 2) == [4, 6] && params.xs.exists_one(x, x == 2)",
    )
    .unwrap();
    assert_eq!(c.eval(&[("params", &json!({"xs": [1, 2, 3]}))]), Ok(true));
    let c = Condition::compile("size(params.xs.map(x, x + 1)) == 3000").unwrap();
    let xs: Vec<u32> = (0..3000).collect();
    assert_eq!(c.eval(&[("params", &json!({ "xs": xs }))]), Ok(true));
}

/// A large output of which the condition reads one field: only that field
/// is converted. Before, the whole output was converted on every evaluation.
#[test]
fn only_the_paths_read_are_converted() {
    let huge: Vec<u32> = (0..200_000).collect();
    let output = json!({"label": "bug", "items": huge, "nested": {"x": 1, "y": [1, 2, 3]}});
    let c = Condition::compile(
        r#"steps.a.output.label == "bug" && steps.a.output.nested.y[1] == 2 && steps.a.status == "completed""#,
    )
    .unwrap();
    let lookup = |id: &str| (id == "a").then(|| (json!("completed"), Some(&output)));
    let vars = [("steps", Binding::Steps(&lookup))];
    let (_, converted) = activation::build(&c.compiled.reads, c.steps(), &vars).unwrap();
    // `steps`, `a`, `status`, `output`, `label`, `nested`, `y`, `y[0]`, `y[1]`.
    assert!(converted.values < 12, "{converted:?}");
    assert_eq!(c.eval_with(&vars), Ok(true));

    // Reading the large list itself is refused, naming the path.
    let c = Condition::compile("size(steps.a.output.items) > 0").unwrap();
    assert_eq!(
        c.eval_with(&vars),
        Err(EvalError::TooMuchData {
            expr: c.source().to_owned(),
            path: "steps.a.output.items".into()
        })
    );
}

#[test]
fn pruning_cannot_be_observed() {
    let params = json!({"m": {"a": 1, "b": 2}, "l": [10, 20, 30]});
    for (expr, want) in [
        ("params.m.a == 1", true),
        ("has(params.m.a) && !has(params.m.c)", true),
        ("params.l[1] == 20", true),
        ("size(params.l) == 3 && params.l[2] == 30", true),
        ("params.m == {'a': 1, 'b': 2}", true),
        ("[1].all(params, params == 1)", true),
    ] {
        let c = Condition::compile(expr).unwrap();
        assert_eq!(c.eval(&[("params", &params)]), Ok(want), "{expr}");
    }
    let c = Condition::compile("params.l[5] == 1").unwrap();
    assert!(matches!(
        c.eval(&[("params", &params)]),
        Err(EvalError::Failed { .. })
    ));
}
