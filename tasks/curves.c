/* curves.c — curves.svg of a training run (report.h, curves_*): loss and
 * accuracy panels drawn as a hand-written SVG from metrics records, written
 * with graph/fileio.h's atomic write.
 *
 * Not here: reading metrics.jsonl (metrics.c). Text is XML-escaped and
 * control characters dropped, so the document is well formed whatever the
 * metric names and title hold. */
#include "tasks/report.h"

#include <math.h>
#include <string.h>

#include "graph/fileio.h"
#include "graph/strbuf.h"

/* ---- curves.svg ------------------------------------------------------ */

enum { PANEL_LOSS, PANEL_ACC, N_PANELS };

typedef struct {
  char name[REPORT_NAME_MAX];
  int panel;
  VEC(double) x;
  VEC(double) y; /* NaN/inf = gap */
} Series;

typedef VEC(Series) SeriesList;

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Series longer than this are averaged over consecutive buckets: a browser
 * draws 2,000 points at once, and a plot cannot show more anyway. */
enum { CURVES_MAX_POINTS = 2000, CURVES_BUCKETS = 1000 };

static void decimate(Series *s) {
  if (s->x.n <= CURVES_MAX_POINTS) return;
  int k = (s->x.n + CURVES_BUCKETS - 1) / CURVES_BUCKETS, n = 0;
  for (int i = 0; i < s->x.n; i += k) {
    int e = i + k < s->x.n ? i + k : s->x.n;
    double sx = 0, sy = 0;
    for (int t = i; t < e; t++) sx += s->x.data[t], sy += s->y.data[t];
    s->x.data[n] = sx / (e - i);
    s->y.data[n] = sy / (e - i); /* a non-finite value keeps its gap */
    n++;
  }
  s->x.n = s->y.n = n;
}

typedef struct {
  double lo, hi, step; /* tick multiples from lo to hi */
} Axis;

/* Ticks at 1, 2 or 5 times a power of ten, about five of them, the range
 * widened to whole ticks. A degenerate or non-finite range becomes [v-1, v+1]
 * or [0, 1]. */
static Axis nice_axis(double lo, double hi) {
  if (!isfinite(lo) || !isfinite(hi) || lo > hi) lo = 0, hi = 1;
  if (hi - lo < 1e-12 * (fabs(lo) + fabs(hi)) || hi == lo) {
    double pad = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1;
    lo -= pad, hi += pad;
  }
  if (!isfinite(hi - lo)) lo = 0, hi = 1;
  double raw = (hi - lo) / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
  double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  return (Axis){floor(lo / step) * step, ceil(hi / step) * step, step};
}

/* Tick intervals of an axis (ticks are lo + k * step, k = 0..n). */
static int n_ticks(const Axis *a) { return (int)lround((a->hi - a->lo) / a->step); }

/* A tick label: decimals from the tick step; "k"/"M" for big numbers;
 * `scale` 100 turns fractions into percent. */
static void tick_label(char *buf, size_t cap, double v, const Axis *a, double scale) {
  double step = a->step * scale, big = fmax(fabs(a->lo), fabs(a->hi)) * scale;
  const char *unit = "";
  v *= scale;
  if (big >= 1e12 || (big > 0 && big < 1e-6)) { /* absurd ranges: short, if not pretty */
    snprintf(buf, cap, "%.3g", v);
    return;
  }
  if (big >= 1e7)
    v /= 1e6, step /= 1e6, unit = "M";
  else if (big >= 1e4)
    v /= 1e3, step /= 1e3, unit = "k";
  int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
  if (dec > 9) dec = 9;
  if (fabs(v) < step * 1e-6) v = 0, unit = ""; /* no "-0", no "0k" */
  snprintf(buf, cap, "%.*f%s%s", dec, v, unit, scale == 100 ? "%" : "");
}

static void svg_text(StrBuf *b, const char *s) {
  for (; *s; s++) {
    switch (*s) {
      case '&':
        strbuf_puts(b, "&amp;");
        break;
      case '<':
        strbuf_puts(b, "&lt;");
        break;
      case '>':
        strbuf_puts(b, "&gt;");
        break;
      case '"':
        strbuf_puts(b, "&quot;");
        break;
      case '\'':
        strbuf_puts(b, "&apos;");
        break;
      default:
        /* XML 1.0 forbids most control characters even escaped */
        if ((unsigned char)*s >= 0x20) strbuf_putc(b, *s);
    }
  }
}

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

typedef struct {
  double x0, x1, y0, y1; /* plot area in pixels (y0 top) */
  Axis xa, ya;
} Frame;

static double px(const Frame *f, double x) {
  return f->x0 + (x - f->xa.lo) / (f->xa.hi - f->xa.lo) * (f->x1 - f->x0);
}
static double py(const Frame *f, double y) {
  return f->y1 - (y - f->ya.lo) / (f->ya.hi - f->ya.lo) * (f->y1 - f->y0);
}

static void draw_panel(StrBuf *b, const SeriesList *sl, int panel, const Frame *f, const char *xlabel,
                       int id) {
  static const char *const ylabels[N_PANELS] = {"loss", "accuracy"};
  double yscale = panel == PANEL_ACC ? 100 : 1;
  char lab[64];
  strbuf_printf(b, "<g class=\"panel-%s\">\n", ylabels[panel]);
  strbuf_printf(b,
        "<clipPath id=\"clip%d\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
        "height=\"%.1f\"/></clipPath>\n",
        id, f->x0, f->y0, f->x1 - f->x0, f->y1 - f->y0);
  /* grid and tick labels */
  for (int k = 0; k <= n_ticks(&f->xa); k++) {
    double t = f->xa.lo + k * f->xa.step, x = px(f, t);
    tick_label(lab, sizeof lab, t, &f->xa, 1);
    strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n", x,
          f->y0, x, f->y1);
    strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x, f->y1,
          x, f->y1 + 5);
    strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x, f->y1 + 18, lab);
  }
  for (int k = 0; k <= n_ticks(&f->ya); k++) {
    double t = f->ya.lo + k * f->ya.step, y = py(f, t);
    tick_label(lab, sizeof lab, t, &f->ya, yscale);
    strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n", f->x0,
          y, f->x1, y);
    strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", f->x0 - 5,
          y, f->x0, y);
    strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", f->x0 - 8, y + 4, lab);
  }
  strbuf_printf(b,
        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
        "stroke=\"#333\"/>\n",
        f->x0, f->y0, f->x1 - f->x0, f->y1 - f->y0);
  strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", (f->x0 + f->x1) / 2,
        f->y1 + 36, xlabel);
  double ly = (f->y0 + f->y1) / 2;
  strbuf_printf(b,
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 %.1f "
        "%.1f)\">%s</text>\n",
        f->x0 - 52, ly, f->x0 - 52, ly, panel == PANEL_ACC ? "accuracy (%)" : "loss");
  /* curves: one polyline per run of finite points; a lone point or a short
   * series gets dots so it shows at all */
  int n_drawn = 0, n_finite = 0;
  for (int i = 0; i < sl->n; i++) {
    const Series *s = &sl->data[i];
    if (s->panel != panel) continue;
    const char *color = palette[n_drawn % 10];
    bool dots = s->x.n <= 60;
    strbuf_printf(b, "<g clip-path=\"url(#clip%d)\" stroke=\"%s\" fill=\"%s\">\n", id, color, color);
    for (int k = 0; k < s->x.n;) {
      if (!isfinite(s->y.data[k])) {
        k++;
        continue;
      }
      int e = k;
      while (e < s->x.n && isfinite(s->y.data[e])) e++;
      n_finite += e - k;
      if (e - k > 1) {
        strbuf_puts(b,
              "<polyline fill=\"none\" stroke-width=\"1.6\" stroke-linejoin=\"round\" points=\"");
        for (int t = k; t < e; t++)
          strbuf_printf(b, "%s%.1f,%.1f", t > k ? " " : "", px(f, s->x.data[t]), py(f, s->y.data[t]));
        strbuf_puts(b, "\"/>\n");
      }
      if (dots || e - k == 1)
        for (int t = k; t < e; t++)
          strbuf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" stroke=\"none\"/>\n",
                px(f, s->x.data[t]), py(f, s->y.data[t]));
      k = e;
    }
    strbuf_puts(b, "</g>\n");
    n_drawn++;
  }
  if (n_finite == 0)
    strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#888\">%s</text>\n",
          (f->x0 + f->x1) / 2, (f->y0 + f->y1) / 2, n_drawn ? "no finite values" : "no data");
  if (n_drawn > 0) {
    /* legend: one row above the plot, right-aligned, so it never hides a
     * curve; ~7 px per character of a 12 px sans-serif */
    double w = 0;
    for (int i = 0; i < sl->n; i++)
      if (sl->data[i].panel == panel) w += 40 + 7.0 * (double)strlen(sl->data[i].name);
    double lx = fmax(f->x0, f->x1 - w + 14), yy = f->y0 - 7;
    int k = 0;
    for (int i = 0; i < sl->n; i++) {
      const Series *s = &sl->data[i];
      if (s->panel != panel) continue;
      strbuf_printf(b,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"2\"/>\n",
            lx, yy - 4, lx + 18, yy - 4, palette[k % 10]);
      strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\">", lx + 22, yy);
      svg_text(b, s->name);
      strbuf_puts(b, "</text>\n");
      lx += 40 + 7.0 * (double)strlen(s->name);
      k++;
    }
  }
  strbuf_puts(b, "</g>\n");
}

char *curves_svg(const MetricsRecord *recs, int n, const CurvesConfig *c) {
  CurvesConfig cfg = c ? *c : (CurvesConfig){0};
  int W = cfg.width > 0 ? cfg.width : 720, H = cfg.panel_height > 0 ? cfg.panel_height : 260;
  bool by_epoch = cfg.x == CURVES_X_EPOCH;
  if (cfg.x == CURVES_X_AUTO) {
    by_epoch = n > 0 && recs[n - 1].epoch >= 1;
    for (int i = 0; i < n; i++) by_epoch = by_epoch && isfinite(recs[i].epoch);
  }
  /* gather the series */
  SeriesList sl = {0};
  for (int i = 0; i < n; i++) {
    const MetricsRecord *r = &recs[i];
    double x = by_epoch ? r->epoch : (double)r->step;
    if (!isfinite(x)) continue;
    for (int k = 0; k < r->n; k++) {
      const Metric *m = &r->m[k];
      int panel = ends_with(m->name, "loss")  ? PANEL_LOSS
                  : ends_with(m->name, "acc") ? PANEL_ACC
                                              : -1;
      if (panel < 0) continue;
      int si = 0;
      while (si < sl.n && strcmp(sl.data[si].name, m->name) != 0) si++;
      if (si == sl.n) {
        Series s;
        memset(&s, 0, sizeof s);
        strcpy(s.name, m->name);
        s.panel = panel;
        vec_push(&sl, s);
      }
      vec_push(&sl.data[si].x, x);
      vec_push(&sl.data[si].y, m->value);
    }
  }
  /* ranges: x shared by the panels, y per panel, over finite points */
  double xlo = INFINITY, xhi = -INFINITY, ylo[N_PANELS], yhi[N_PANELS];
  bool used[N_PANELS] = {false, false};
  for (int p = 0; p < N_PANELS; p++) ylo[p] = INFINITY, yhi[p] = -INFINITY;
  for (int i = 0; i < sl.n; i++) {
    Series *s = &sl.data[i];
    decimate(s);
    used[s->panel] = true;
    for (int k = 0; k < s->x.n; k++) {
      double x = s->x.data[k], y = s->y.data[k];
      if (!isfinite(y)) continue;
      xlo = fmin(xlo, x), xhi = fmax(xhi, x);
      ylo[s->panel] = fmin(ylo[s->panel], y), yhi[s->panel] = fmax(yhi[s->panel], y);
    }
  }
  if (xlo > xhi) xlo = 0, xhi = by_epoch ? 1 : 100;
  if (xlo > 0 && xlo < 0.25 * xhi) xlo = 0; /* start at 0 unless zoomed far in */
  int panels[N_PANELS], n_panels = 0;
  if (used[PANEL_LOSS] || !used[PANEL_ACC]) panels[n_panels++] = PANEL_LOSS;
  if (used[PANEL_ACC]) panels[n_panels++] = PANEL_ACC;
  int top = cfg.title ? 24 : 0, total_h = top + n_panels * H;

  StrBuf b = {0};
  strbuf_puts(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  strbuf_printf(
      &b,
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
      "font-family=\"sans-serif\" font-size=\"12\" fill=\"#222\">\n",
      W, total_h, W, total_h);
  strbuf_printf(&b, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n", W, total_h);
  if (cfg.title) {
    strbuf_puts(&b, "<title>");
    svg_text(&b, cfg.title);
    strbuf_puts(&b, "</title>\n");
    strbuf_printf(&b,
          "<text x=\"%.1f\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">",
          W / 2.0);
    svg_text(&b, cfg.title);
    strbuf_puts(&b, "</text>\n");
  }
  for (int i = 0; i < n_panels; i++) {
    int p = panels[i];
    Frame f;
    f.x0 = 78, f.x1 = W - 16, f.y0 = top + i * H + 24, f.y1 = top + (i + 1) * H - 46;
    f.xa = nice_axis(xlo, xhi);
    f.ya = nice_axis(used[p] && ylo[p] <= yhi[p] ? ylo[p] : 0,
                     used[p] && ylo[p] <= yhi[p] ? yhi[p] : 1);
    draw_panel(&b, &sl, p, &f, by_epoch ? "epoch" : "step", i);
  }
  strbuf_puts(&b, "</svg>\n");
  for (int i = 0; i < sl.n; i++) {
    vec_free(&sl.data[i].x);
    vec_free(&sl.data[i].y);
  }
  vec_free(&sl);
  return strbuf_take(&b);
}

bool curves_write_svg(const char *path, const MetricsRecord *recs, int n, const CurvesConfig *c,
                      Diag *d) {
  char *svg = curves_svg(recs, n, c);
  bool ok = file_write_atomic(path, svg, strlen(svg), d);
  free(svg);
  return ok;
}
