"""Steering playground: a contrast-pair vector or ActAdd, unsteered vs steered generations, a sweep."""

import streamlit as st

from workbench import viz
from workbench.dashboard import compute
from workbench.dashboard.common import (
    errors_shown,
    get_model,
    model_name,
    pair_sets,
    plot,
    show_text,
)

ACTADD = "ActAdd: type two prompts"

st.header("Steering playground")
st.caption(
    "Add alpha times a direction to the residual stream after one layer, in every generation step. "
    "Negative alpha steers towards the pair set's negative side."
)
with errors_shown():
    name = model_name()
    n_layers = get_model(name).info.n_layers
    sets = {p.name: p for p in pair_sets()}
    source_name = st.selectbox("Direction", [*sets, ACTADD], key="steer_source")
    positive = negative = ""
    if source_name == ACTADD:
        left, right = st.columns(2)
        positive = left.text_input("Positive prompt", "Love", key="steer_positive")
        negative = right.text_input("Negative prompt", "Hate", key="steer_negative")
        source = "actadd"
    else:
        source = str(sets[source_name])
    left, middle, right = st.columns(3)
    layer = left.slider("Layer", 0, n_layers - 1, int(0.3 * n_layers), key="steer_layer")
    alpha = middle.slider("Coefficient alpha", -12.0, 12.0, -4.0, step=0.5, key="steer_alpha")
    scorer_name = right.selectbox(
        "Toxicity scorer", ["profanity-check", "auto", "detoxify"], key="steer_scorer"
    )
    prompt = st.text_input("Prompt to continue", "Tell me about your weekend.", key="steer_prompt")
    # 16: the page opens in seconds
    new_tokens = st.slider("New tokens", 8, 96, 16, step=8, key="steer_new_tokens")
    vector = compute.steering_vector(name, source, layer, positive, negative)
    key = (source, layer, positive, negative)
    # Two cached calls, so moving the coefficient never regenerates the unsteered text.
    shown = [
        compute.steered(name, vector, key, prompt, (a,), scorer_name, new_tokens)
        for a in (0.0, float(alpha))
    ]
    columns = st.columns(2)
    titles = ("Unsteered", f"Steered (alpha {alpha:+g}, layer {layer})")
    for column, title, key_name, result in zip(columns, titles, ("unsteered", "steered"), shown):
        text, score = result.texts[0], result.toxicity[0]
        with column:
            st.markdown(f"**{title}**")
            show_text(text, f"steer_text_{key_name}")
            st.metric(f"toxicity ({result.scorer})", f"{score:.3f}")

    st.subheader("Sweep over coefficients")
    low, high = st.slider("Range", -16.0, 16.0, (-8.0, 8.0), step=1.0, key="steer_range")
    points = st.slider("Points", 3, 11, 5, key="steer_points")
    if st.button("Run sweep", key="steer_sweep"):
        alphas = tuple(round(low + (high - low) * i / (points - 1), 3) for i in range(points))
        st.session_state["steer_sweep_request"] = (key, alphas)
    request = st.session_state.get("steer_sweep_request")
    if request and request[0] == key:
        result = compute.steered(name, vector, key, prompt, request[1], scorer_name, new_tokens)
        plot(viz.steered_toxicity(result), "steer_sweep_chart")
        st.caption(
            "One greedy continuation per coefficient (n = 1 each): an example of what steering "
            "does, not a measurement. `workbench audit toxicity --steer ...` measures it over many "
            "prompts, with intervals and the cost."
        )
        st.dataframe(result.to_frame(), hide_index=True, width="stretch")

    st.subheader("Interventions, as audits apply them")
    st.caption(
        "The interface `workbench audit toxicity --intervention` and `workbench intervene search` "
        "use: add the direction scaled in units of the mean residual-stream norm at the layer "
        "(0.1 = 10% of the typical norm there), ablate it (hooks) or orthogonalise the weights "
        "against it, or put an instruction before the prompt (the prompting baseline)."
    )
    left, middle, right = st.columns(3)
    method = left.selectbox("Method", ["add", "ablate", "orthogonalise", "prompt"], key="iv_method")
    coefficient = middle.slider(
        "Coefficient (x mean residual norm)", -0.5, 0.5, 0.1, step=0.05, key="iv_coefficient"
    )
    instruction = right.text_input(
        "Instruction (prompt method)",
        "Continue the text in a polite, respectful and non-toxic way.",
        key="iv_instruction",
    )
    if source == "actadd":
        st.info("Interventions take their direction from a pair set: choose one above.")
    else:
        example = compute.intervened(
            name, source, layer, method, float(coefficient), instruction, prompt, scorer_name,
            new_tokens,
        )  # fmt: skip
        st.text(example.description)
        columns = st.columns(2)
        for column, title, text, score, key_name in zip(
            columns, ("Unmodified", "Intervened"), example.texts, example.toxicity,
            ("iv_text_plain", "iv_text_intervened"),
        ):  # fmt: skip
            with column:
                st.markdown(f"**{title}**")
                show_text(text, key_name)
                st.metric(f"toxicity ({example.scorer})", f"{score:.3f}")
