"""Teachers that are no language model, plugged into stage A as engines (clinical_distil.engines entry points).

    from teachers.text_only import TextOnlyTeacher, load_teacher, answer_question

text_only: items written by rules from the note text alone (sections, NegEx/ConText status of each concept
mention, values read with their names); answer_question answers a free-text question about a note by the same
rules, for baselines.
"""
