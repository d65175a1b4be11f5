"""Scribelink cloud relay: registry, enrollment, blind routing of sealed audio to scribes."""
