/* test_yaml_errors.c — every broken model in tests/yaml_errors/ must fail to
 * expand with exactly the diagnostic its first line announces:
 *
 *   # expect: FILE:7:15: error: unknown op 'matmull'
 *   # args: --graph nope --set hidden=4        (optional second line)
 *
 * FILE stands for the model's path as passed, DIR for its folder. Only the
 * first line of the first diagnostic is compared (the source line and caret
 * follow it). The same files run through the bertc binary under ASan in
 * tests/yaml_errors.sh. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"
#include "tests/test.h"

#define ERR_DIR BC_SOURCE_DIR "/tests/yaml_errors"

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The value of the comment line `# key: value` among the first lines. */
static char *header_value(const char *text, const char *key) {
  size_t kn = strlen(key);
  const char *p = text;
  for (int line = 0; line < 3 && *p; line++) {
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n > kn + 4 && strncmp(p, "# ", 2) == 0 && strncmp(p + 2, key, kn) == 0 &&
        strncmp(p + 2 + kn, ": ", 2) == 0) {
      char *v = bc_malloc(n - kn - 3);
      memcpy(v, p + kn + 4, n - kn - 4);
      v[n - kn - 4] = '\0';
      return v;
    }
    p = e ? e + 1 : p + n;
  }
  return NULL;
}

/* `tmpl` with FILE -> file and DIR -> dir. */
static char *substitute(const char *tmpl, const char *file, const char *dir) {
  size_t cap = strlen(tmpl) * (strlen(file) + strlen(dir) + 1) + 1;
  char *out = bc_malloc(cap), *o = out;
  for (const char *p = tmpl; *p;) {
    if (strncmp(p, "FILE", 4) == 0) {
      o += sprintf(o, "%s", file);
      p += 4;
    } else if (strncmp(p, "DIR", 3) == 0) {
      o += sprintf(o, "%s", dir);
      p += 3;
    } else {
      *o++ = *p++;
    }
  }
  *o = '\0';
  return out;
}

static int check_file(const char *name) {
  int fails = 0;
  char *path = bc_asprintf("%s/%s", ERR_DIR, name);
  Diag d;
  diag_init(&d);
  char *text = bc_read_file(path, NULL, &d);
  if (!text) {
    fprintf(stderr, "%s: cannot read\n", path);
    diag_free(&d);
    free(path);
    return 1;
  }
  char *expect = header_value(text, "expect");
  char *args = header_value(text, "args");
  if (!expect) {
    fprintf(stderr, "%s: no '# expect:' line\n", path);
    fails++;
    goto done;
  }
  /* args: --graph NAME and --set K=V, separated by spaces */
  const char *graph = NULL;
  Setting sets[8];
  int n_sets = 0;
  char *words[32];
  int n_words = 0;
  for (char *w = args ? strtok(args, " ") : NULL; w && n_words < 32; w = strtok(NULL, " "))
    words[n_words++] = w;
  for (int i = 0; i + 1 < n_words; i += 2) {
    if (strcmp(words[i], "--graph") == 0) {
      graph = words[i + 1];
    } else if (strcmp(words[i], "--set") == 0 && n_sets < 8) {
      char *eq = strchr(words[i + 1], '=');
      BC_ASSERT(eq);
      *eq = '\0';
      sets[n_sets++] = (Setting){words[i + 1], eq + 1};
    }
  }
  Graph g;
  bool ok = model_expand(&g, path, graph, sets, n_sets, &d);
  char *want = substitute(expect, path, ERR_DIR);
  const char *first = diag_first(&d);
  size_t first_len = strcspn(first, "\n");
  if (ok) {
    fprintf(stderr, "%s: expanded without error, expected\n  %s\n", name, want);
    graph_free(&g);
    fails++;
  } else if (strlen(want) != first_len || strncmp(first, want, first_len) != 0) {
    fprintf(stderr, "%s: wrong first diagnostic\n  got:  %.*s\n  want: %s\n", name,
            (int)first_len, first, want);
    fails++;
  }
  free(want);
done:
  free(expect);
  free(args);
  free(text);
  diag_free(&d);
  free(path);
  return fails;
}

TEST(every_broken_model_fails_with_its_diagnostic) {
  DIR *dir = opendir(ERR_DIR);
  CHECK(dir != NULL);
  if (!dir) return;
  VEC(char *) names = {0};
  for (struct dirent *e; (e = readdir(dir));) {
    size_t n = strlen(e->d_name);
    if (n > 5 && strcmp(e->d_name + n - 5, ".yaml") == 0) vec_push(&names, bc_strdup(e->d_name));
  }
  closedir(dir);
  qsort(names.data, (size_t)names.n, sizeof(char *), cmp_str);
  CHECK_MSG(names.n >= 24, "only %d broken models", names.n);
  int fails = 0;
  for (int i = 0; i < names.n; i++) {
    fails += check_file(names.data[i]);
    free(names.data[i]);
  }
  vec_free(&names);
  CHECK_EQ_INT(fails, 0);
}

TEST_MAIN()
