"""kfp pipeline definitions composing the components."""
