{{ config(meta={"delta_table": "help_corpus"}, tags=["help_centre"]) }}
-- The help assistant's retrieval corpus: one row per document, its text trimmed, with the ACL
-- that decides who may retrieve it. Documents with no text are left out (nothing to retrieve).
select
    doc_id,
    trim(title) as title,
    topic,
    acl,
    trim(text) as text,
    updated_at
from {{ source('lake', 'help_documents') }}
where length(trim(text)) > 0
