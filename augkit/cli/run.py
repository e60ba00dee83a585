"""`augkit run`: a whole experiment from a TOML recipe."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from augkit import distributed
from augkit.cli.common import DEVICE, SYNC_BN, err, out, say


@click.command("run")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key (repeatable): evaluate.epochs=2, data.source=PATH, "
                   "augment.acgan.params.epochs=3.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: the recipe's [output] dir, else runs/<recipe name>).")
@DEVICE
@click.option("--resume", is_flag=True, help="Continue an interrupted run in its folder (same recipe and --set).")
@click.option("--check", is_flag=True, help="Only check the recipe and print the plan; run nothing.")
@SYNC_BN
def run_cmd(recipe_path, overrides, out_dir, device, resume, check, sync_bn):
    """Run a whole experiment from a TOML recipe: data, augment steps, evaluation and report."""
    from augkit.recipe import load_recipe
    from augkit.runner import run_recipe

    recipe = load_recipe(recipe_path, overrides, out=out_dir)
    if check:
        if distributed.env_rank() != 0:  # under torchrun every rank checks, rank 0 alone prints the plan
            return
        for line in recipe.plan():
            out.print(line, highlight=False, markup=False, soft_wrap=True)
        return
    device = distributed.setup(device, sync_batchnorm=sync_bn)
    report = run_recipe(recipe, device=device, resume=resume, command=" ".join(["augkit", *sys.argv[1:]]),
                        say=lambda line: err.print(line, highlight=False, markup=False))
    say(f"report: {report}")
