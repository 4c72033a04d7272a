/* yaml_load.h — a YAML file as a small read-only tree (YNode) with 1-based
 * source locations on every node and every mapping key, built with libyaml's
 * event parser.
 *
 * What it adds to libyaml: duplicate mapping keys are errors, scalars keep
 * whether they were quoted (`512` vs "512"), aliases (`*a`) share the
 * anchored subtree. What it does not do: YAML tags, merge keys (`<<` is an
 * ordinary key), non-scalar mapping keys (an error), typing of scalars (all
 * scalars are text; the model loader decides what they mean). */
#ifndef BC_YAML_LOAD_H
#define BC_YAML_LOAD_H

#include "base.h"

typedef enum { YNODE_SCALAR, YNODE_SEQ, YNODE_MAP } YNodeKind;

typedef struct YNode YNode;

typedef struct {
  const char *key; /* scalar text of the key */
  SrcLoc key_loc;
  YNode *value;
} YPair;

struct YNode {
  YNodeKind kind;
  SrcLoc loc;   /* first character of the node (for flow collections: `[` / `{`) */
  int end_line; /* line of the node's last character */
  /* YNODE_SCALAR */
  const char *text; /* NUL-terminated; may contain NULs only if the YAML did */
  bool quoted;      /* '...', "...", | or > (anything but a plain scalar) */
  bool flow;        /* a list or mapping written in flow style: [..] or {..} */
  /* YNODE_SEQ: items[0..n); YNODE_MAP: pairs[0..n) in file order */
  int n;
  YNode **items;
  YPair *pairs;
};

/* One parsed file. All nodes and strings live in `arena`. */
typedef struct {
  Arena arena;
  const char *file; /* interned path, the `file` of every SrcLoc */
  YNode *root;
} YDoc;

/* Parses the file at `path`. On success *doc holds the tree (the caller frees
 * it with ydoc_free); on failure it returns false with diagnostics (syntax
 * errors at libyaml's problem mark, duplicate keys, "empty model file" when
 * there is no document or only a null one, more than one document) and
 * leaves *doc empty (ydoc_free is harmless on it). */
bool ydoc_load_file(YDoc *doc, const char *path, Diag *d);
/* Same, from `text` (n_bytes long); `file` names it in locations. */
bool ydoc_load_string(YDoc *doc, const char *file, const char *text, size_t n_bytes, Diag *d);
void ydoc_free(YDoc *doc);

/* The pair of mapping `map` with key `key`, or NULL (also when `map` is not
 * a mapping). */
const YPair *ynode_pair(const YNode *map, const char *key);
/* Its value, or NULL. */
const YNode *ynode_get(const YNode *map, const char *key);
/* A plain scalar spelled `~`, `null`, `Null`, `NULL` or nothing. */
bool ynode_is_null(const YNode *n);
/* "a scalar", "a list", "a mapping": for messages like "expected a list, got a mapping". */
const char *ynode_kind_name(YNodeKind k);

#endif
