"""The public API is small and pinned: a change to it is a deliberate change to this test."""

import webhook_dsl


def test_public_names_are_pinned() -> None:
    assert sorted(webhook_dsl.__all__) == [
        "CallResult",
        "ConfigError",
        "ConfigSyntaxError",
        "Diagnostic",
        "DiagnosticsError",
        "PlanFormatError",
        "RenderError",
        "RenderedRequest",
        "Runtime",
        "RuntimeSettings",
        "SQLiteStore",
        "Session",
        "SessionNotFound",
        "Store",
        "Trigger",
        "TriggerResult",
        "WebhookDslError",
        "WebhookPlan",
        "__version__",
        "call_trigger_sync",
        "compile_file",
        "compile_trigger",
        "compile_webhook",
        "dump_plans",
        "load_plans",
        "load_trigger",
    ]
    for name in webhook_dsl.__all__:
        assert hasattr(webhook_dsl, name)


def test_error_hierarchy() -> None:
    assert issubclass(webhook_dsl.ConfigSyntaxError, webhook_dsl.ConfigError)
    assert issubclass(webhook_dsl.ConfigError, ValueError)
    assert issubclass(webhook_dsl.RenderError, webhook_dsl.WebhookDslError)
    assert issubclass(webhook_dsl.PlanFormatError, ValueError)
