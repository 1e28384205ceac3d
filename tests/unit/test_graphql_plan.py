"""proxy.graphql_dora's pure parts: how a document is planned (forward, local, split), what each
half of a split keeps, the rows built from REST answers, and the merge of two answers."""

from __future__ import annotations

from datetime import date

from graphql import parse, print_ast, validate

from proxy.graphql_dora import SCHEMA, merge, metric_rows, plan

DORA = (
    'dora { metrics(startDate: "2021-01-01", endDate: "2021-01-03") { date deploymentFrequency } }'
)


def test_no_dora_selection_is_forwarded() -> None:
    assert plan(parse('{ project(fullPath: "a/b") { name } }'), None).kind == "forward"
    assert plan(parse("{ currentUser { username } }"), None).kind == "forward"
    assert plan(parse("{ __schema { types { name } } }"), None).kind == "forward"


def test_mutations_unknown_fragments_and_unknown_operations_are_forwarded() -> None:
    assert (
        plan(parse(f'mutation {{ project(fullPath: "a") {{ {DORA} }} }}'), None).kind == "forward"
    )
    assert plan(parse('{ project(fullPath: "a") { ...Missing } }'), None).kind == "forward"
    doc = parse(f'query A {{ project(fullPath: "a") {{ {DORA} }} }}')
    assert plan(doc, "B").kind == "forward"
    assert plan(doc, "A").kind == "local"


def test_pure_dora_documents_are_local_whatever_their_form() -> None:
    for text in (
        f'{{ project(fullPath: "a/b") {{ {DORA} }} }}',
        f'{{ __typename g: group(fullPath: "a") {{ __typename {DORA} }} }}',
        f'{{ ...Q }} fragment Q on Query {{ project(fullPath: "a") {{ ...P }} }} '
        f"fragment P on Project {{ {DORA} }}",
        f'{{ project(fullPath: "a") {{ ... on Project {{ {DORA} }} }} }}',
    ):
        planned = plan(parse(text), None)
        assert planned.kind == "local", text
        assert validate(SCHEMA, planned.local) == [], text


def test_a_mixed_document_splits_into_two_valid_halves() -> None:
    text = (
        "query Q($p: ID!, $s: Date, $unused: Int) { me: currentUser { username } "
        'project(fullPath: $p) { ...F } other: project(fullPath: "x") { name } } '
        'fragment F on Project { id name dora { metrics(startDate: $s, endDate: "2021-02-01") '
        "{ date } } }"
    )
    planned = plan(parse(text), "Q")
    assert planned.kind == "split"
    local, remote = print_ast(planned.local), print_ast(planned.remote)
    assert validate(SCHEMA, planned.local) == []
    assert "dora" in local and "currentUser" not in local and "name" not in local
    assert "other" not in local and "$unused" not in local and "$s" in local
    assert "dora" not in remote and "currentUser" in remote and "other: project" in remote
    assert "$s" not in remote and "$p" in remote and "fragment" not in remote


def test_rows_fill_days_and_months_only_with_date_selected() -> None:
    answers = {
        "deploymentFrequency": [{"date": "2021-01-02", "value": 3}],
        "changeFailureRate": [{"date": "2021-01-03", "value": 0.5}],
    }
    start, end = date(2021, 1, 1), date(2021, 1, 3)
    assert metric_rows(answers, "daily", start, end, fill=True) == [
        {"date": "2021-01-01", "deploymentFrequency": None, "changeFailureRate": None},
        {"date": "2021-01-02", "deploymentFrequency": 3, "changeFailureRate": None},
        {"date": "2021-01-03", "deploymentFrequency": None, "changeFailureRate": 0.5},
    ]
    assert [r["date"] for r in metric_rows(answers, "daily", start, end, fill=False)] == [
        "2021-01-02",
        "2021-01-03",
    ]
    months = metric_rows(
        {"deploymentFrequency": [{"date": "2021-02-01", "value": 1.5}]},
        "monthly",
        date(2020, 12, 15),
        date(2021, 3, 1),
        fill=True,
    )
    assert [(r["date"], r["deploymentFrequency"]) for r in months] == [
        ("2020-12-01", None),
        ("2021-01-01", None),
        ("2021-02-01", 1.5),
        ("2021-03-01", None),
    ]
    everything = {"deploymentFrequency": [{"date": None, "value": 0.25}]}
    assert metric_rows(everything, "all", start, end, fill=True) == [
        {"date": None, "deploymentFrequency": 0.25}
    ]


def test_merge_keeps_nulls_and_both_errors() -> None:
    remote = {
        "data": {"project": {"name": "app"}, "other": None},
        "errors": [{"message": "upstream", "path": ["x"]}],
    }
    local = {
        "data": {"project": {"dora": {"metrics": None}}, "other": {"dora": {"metrics": []}}},
        "errors": [{"message": "ours", "path": ["project", "dora", "metrics"]}],
    }
    assert merge(remote, local) == {
        "data": {"project": {"name": "app", "dora": {"metrics": None}}, "other": None},
        "errors": [remote["errors"][0], local["errors"][0]],
    }
    refused = {"errors": [{"message": "Field 'x' doesn't exist on type 'Project'"}]}
    assert merge(refused, local) == {"errors": refused["errors"] + local["errors"]}
