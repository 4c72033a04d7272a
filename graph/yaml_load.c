/* yaml_load.c — builds the YNode tree from libyaml's event stream.
 *
 * A stack of open collections collects children in heap vectors; when a
 * collection ends its children are copied into the arena. Every error path
 * frees the stack, the anchors and the parser, so a broken file leaks
 * nothing. Aliases point at the anchored node (the tree becomes a DAG, never
 * a cycle: an anchor is usable only once its node is complete).
 *
 * Not here: any meaning of the scalars (passes/expand.c decides). */
#include "yaml_load.h"

#include <string.h>
#include <yaml.h>

typedef struct {
  YNode *node;
  VEC(YNode *) items;
  VEC(YPair) pairs;
  /* maps: the key read and waiting for its value */
  bool have_key;
  YPair key;
  const char *anchor; /* arena string or NULL */
} Frame;

typedef struct {
  const char *name;
  YNode *node;
} Anchor;

typedef struct {
  YDoc *doc;
  Diag *d;
  const char *text;
  size_t n_bytes;
  VEC(Frame) stack;
  VEC(Anchor) anchors;
  int n_docs;
} Loader;

static SrcLoc mark_loc(const Loader *l, yaml_mark_t m) {
  return (SrcLoc){l->doc->file, (int)m.line + 1, (int)m.column + 1};
}

/* 1-based line/col of byte `off` of the text (reader errors have no mark). */
static SrcLoc offset_loc(const Loader *l, size_t off) {
  SrcLoc loc = {l->doc->file, 1, 1};
  for (size_t i = 0; i < off && i < l->n_bytes; i++) {
    if (l->text[i] == '\n') {
      loc.line++;
      loc.col = 1;
    } else {
      loc.col++;
    }
  }
  return loc;
}

static void report_parser_error(Loader *l, const yaml_parser_t *p) {
  const char *problem = p->problem ? p->problem : "invalid YAML";
  if (p->error == YAML_READER_ERROR) {
    if (p->problem_value != -1)
      diag_error(l->d, offset_loc(l, p->problem_offset), "%s (byte 0x%02X)", problem,
                 (unsigned)p->problem_value);
    else
      diag_error(l->d, offset_loc(l, p->problem_offset), "%s", problem);
    return;
  }
  if (p->error == YAML_MEMORY_ERROR) {
    diag_error(l->d, (SrcLoc){l->doc->file, 0, 0}, "out of memory while parsing YAML");
    return;
  }
  diag_error(l->d, mark_loc(l, p->problem_mark), "%s", problem);
  if (p->context) diag_note(l->d, mark_loc(l, p->context_mark), "%s", p->context);
}

static YNode *new_node(Loader *l, YNodeKind kind, yaml_mark_t start) {
  YNode *n = arena_alloc(&l->doc->arena, sizeof(YNode));
  n->kind = kind;
  n->loc = mark_loc(l, start);
  n->end_line = n->loc.line;
  return n;
}

static const char *arena_str(Loader *l, const yaml_char_t *s) {
  return s ? arena_strdup(&l->doc->arena, (const char *)s) : NULL;
}

static bool add_anchor(Loader *l, const char *name, YNode *node) {
  if (!name) return true;
  /* YAML lets an anchor be redefined; the latest definition wins. */
  for (int i = 0; i < l->anchors.n; i++)
    if (strcmp(l->anchors.data[i].name, name) == 0) {
      l->anchors.data[i].node = node;
      return true;
    }
  vec_push(&l->anchors, ((Anchor){name, node}));
  return true;
}

/* Hands a finished node to the innermost open collection (or makes it the
 * root). `key_mark` is where the node starts, used when it becomes a key. */
static bool attach(Loader *l, YNode *node, yaml_mark_t mark) {
  if (l->stack.n == 0) {
    l->doc->root = node;
    return true;
  }
  Frame *f = &l->stack.data[l->stack.n - 1];
  if (f->node->kind == YNODE_SEQ) {
    vec_push(&f->items, node);
    return true;
  }
  if (!f->have_key) {
    if (node->kind != YNODE_SCALAR) {
      diag_error(l->d, mark_loc(l, mark), "mapping keys must be scalars, not %s",
                 ynode_kind_name(node->kind));
      return false;
    }
    for (int i = 0; i < f->pairs.n; i++) {
      if (strcmp(f->pairs.data[i].key, node->text) == 0) {
        diag_error(l->d, node->loc, "duplicate key '%s' (first at line %d)", node->text,
                   f->pairs.data[i].key_loc.line);
        return false;
      }
    }
    f->have_key = true;
    f->key = (YPair){node->text, node->loc, NULL};
    return true;
  }
  f->key.value = node;
  vec_push(&f->pairs, f->key);
  f->have_key = false;
  return true;
}

static void open_collection(Loader *l, YNodeKind kind, const yaml_event_t *e,
                            const yaml_char_t *anchor, bool flow) {
  Frame f = {0};
  f.node = new_node(l, kind, e->start_mark);
  f.node->flow = flow;
  f.anchor = arena_str(l, anchor);
  vec_push(&l->stack, f);
}

static bool close_collection(Loader *l, const yaml_event_t *e) {
  BC_ASSERT(l->stack.n > 0);
  Frame f = l->stack.data[--l->stack.n];
  YNode *n = f.node;
  n->end_line = (int)e->end_mark.line + 1;
  if (n->kind == YNODE_SEQ) {
    n->n = f.items.n;
    n->items = arena_alloc(&l->doc->arena, sizeof(YNode *) * (size_t)(f.items.n + 1));
    if (f.items.n) memcpy(n->items, f.items.data, sizeof(YNode *) * (size_t)f.items.n);
  } else {
    n->n = f.pairs.n;
    n->pairs = arena_alloc(&l->doc->arena, sizeof(YPair) * (size_t)(f.pairs.n + 1));
    if (f.pairs.n) memcpy(n->pairs, f.pairs.data, sizeof(YPair) * (size_t)f.pairs.n);
  }
  vec_free(&f.items);
  vec_free(&f.pairs);
  add_anchor(l, f.anchor, n);
  return attach(l, n, e->start_mark);
}

/* One event; false on an error (already reported). *done at stream end. */
static bool handle_event(Loader *l, const yaml_event_t *e, bool *done) {
  switch (e->type) {
  case YAML_STREAM_END_EVENT:
    *done = true;
    return true;
  case YAML_DOCUMENT_START_EVENT:
    if (++l->n_docs > 1) {
      diag_error(l->d, mark_loc(l, e->start_mark),
                 "a model file holds one YAML document; this is a second one");
      return false;
    }
    return true;
  case YAML_SCALAR_EVENT: {
    YNode *n = new_node(l, YNODE_SCALAR, e->start_mark);
    n->end_line = (int)e->end_mark.line + 1;
    n->text = arena_alloc(&l->doc->arena, e->data.scalar.length + 1);
    memcpy((char *)n->text, e->data.scalar.value, e->data.scalar.length);
    n->quoted = e->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    add_anchor(l, arena_str(l, e->data.scalar.anchor), n);
    return attach(l, n, e->start_mark);
  }
  case YAML_SEQUENCE_START_EVENT:
    open_collection(l, YNODE_SEQ, e, e->data.sequence_start.anchor,
                    e->data.sequence_start.style == YAML_FLOW_SEQUENCE_STYLE);
    return true;
  case YAML_MAPPING_START_EVENT:
    open_collection(l, YNODE_MAP, e, e->data.mapping_start.anchor,
                    e->data.mapping_start.style == YAML_FLOW_MAPPING_STYLE);
    return true;
  case YAML_SEQUENCE_END_EVENT:
  case YAML_MAPPING_END_EVENT:
    return close_collection(l, e);
  case YAML_ALIAS_EVENT: {
    const char *name = (const char *)e->data.alias.anchor;
    for (int i = l->anchors.n - 1; i >= 0; i--)
      if (strcmp(l->anchors.data[i].name, name) == 0)
        return attach(l, l->anchors.data[i].node, e->start_mark);
    diag_error(l->d, mark_loc(l, e->start_mark),
               "unknown alias '*%s' (anchors must be defined, and complete, before use)", name);
    return false;
  }
  default: /* stream start, document end, no event */
    return true;
  }
}

bool ydoc_load_string(YDoc *doc, const char *file, const char *text, size_t n_bytes, Diag *d) {
  memset(doc, 0, sizeof(*doc));
  arena_init(&doc->arena);
  doc->file = bc_intern(file);
  Loader l = {.doc = doc, .d = d, .text = text, .n_bytes = n_bytes};
  yaml_parser_t parser;
  bool ok = false;
  if (!yaml_parser_initialize(&parser)) {
    diag_error(d, (SrcLoc){doc->file, 0, 0}, "cannot initialize the YAML parser");
    goto cleanup_nop;
  }
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, n_bytes);
  for (bool done = false; !done;) {
    yaml_event_t e;
    if (!yaml_parser_parse(&parser, &e)) {
      report_parser_error(&l, &parser);
      goto cleanup;
    }
    bool good = handle_event(&l, &e, &done);
    yaml_event_delete(&e);
    if (!good) goto cleanup;
  }
  if (!doc->root || ynode_is_null(doc->root)) {
    diag_error(d, (SrcLoc){doc->file, 0, 0}, "empty model file");
    goto cleanup;
  }
  ok = true;
cleanup:
  yaml_parser_delete(&parser);
cleanup_nop:
  for (int i = 0; i < l.stack.n; i++) {
    vec_free(&l.stack.data[i].items);
    vec_free(&l.stack.data[i].pairs);
  }
  vec_free(&l.stack);
  vec_free(&l.anchors);
  if (!ok) ydoc_free(doc);
  return ok;
}

bool ydoc_load_file(YDoc *doc, const char *path, Diag *d) {
  memset(doc, 0, sizeof(*doc));
  size_t n = 0;
  char *text = bc_read_file(path, &n, d);
  if (!text) return false;
  bool ok = ydoc_load_string(doc, path, text, n, d);
  free(text);
  return ok;
}

void ydoc_free(YDoc *doc) {
  arena_free(&doc->arena);
  doc->root = NULL;
}

const YPair *ynode_pair(const YNode *map, const char *key) {
  if (!map || map->kind != YNODE_MAP) return NULL;
  for (int i = 0; i < map->n; i++)
    if (strcmp(map->pairs[i].key, key) == 0) return &map->pairs[i];
  return NULL;
}

const YNode *ynode_get(const YNode *map, const char *key) {
  const YPair *p = ynode_pair(map, key);
  return p ? p->value : NULL;
}

bool ynode_is_null(const YNode *n) {
  if (!n || n->kind != YNODE_SCALAR || n->quoted) return false;
  const char *t = n->text;
  return !*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") ||
         !strcmp(t, "NULL");
}

const char *ynode_kind_name(YNodeKind k) {
  switch (k) {
  case YNODE_SCALAR: return "a scalar";
  case YNODE_SEQ: return "a list";
  case YNODE_MAP: return "a mapping";
  }
  return "?";
}
