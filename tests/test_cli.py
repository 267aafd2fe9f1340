"""The command line: every stage of build-defaults is a real command."""


def test_build_defaults_stages_are_valid_commands():
    """Every command `geolens build-defaults` runs parses with the real CLI (a renamed flag fails here)."""
    from engine.cli import build_parser
    from engine.commands import DEFAULT_STAGES, TAKES_DEVICE

    parser = build_parser()
    for stage, commands in DEFAULT_STAGES.items():
        for argv in commands:
            argv = [a.replace("{default_cache}", "some-cache") for a in argv]
            args = parser.parse_args(argv + (["--device", "cpu"] if argv[0] in TAKES_DEVICE else []))
            assert callable(args.func), (stage, argv)
    assert set(DEFAULT_STAGES) == {"shapes", "saes", "concepts", "geodesics", "dvr"}


def test_geodesics_ebm_flag_picks_the_objective():
    from engine.cli import build_parser
    from engine.geodesics.cli import config_from_args as _config

    parser = build_parser()
    assert _config(parser.parse_args(["report", "geodesics", "--dataset", "ucg"])).ebm_objective == "dsm"
    assert _config(parser.parse_args(["report", "geodesics", "--dataset", "urc"])).ebm_objective == "cd"
    cfg = _config(parser.parse_args(["geodesics", "precompute", "--dataset", "ucg", "--ebm", "cd"]))
    assert cfg.ebm_objective == "cd" and cfg.dataset == "ucg"
    assert cfg.solver_init == "line"
    cfg = _config(parser.parse_args(["report", "geodesics", "--dataset", "urc", "--init", "graph"]))
    assert cfg.solver_init == "graph"
