/* grad_rules.h — the vector-Jacobian products of the primitive ops, shared by
 * autodiff.c (the walk) and grad_rules.c (the table). Private to passes/.
 *
 * Elementwise ops take their VJPs from graph/ops.def; every other
 * differentiable op has a hand-written rule. */
#ifndef BC_GRAD_RULES_H
#define BC_GRAD_RULES_H

#include "../graph/ir.h"

/* Whether input k of an `op` node with n_in inputs can carry a gradient
 * (ignoring dtypes): false for conditions, indices, cast, random, ... */
bool grad_rule_input_diff(Op op, int k, int n_in);

/* Appends the nodes of the VJP of node `n` (a copy: the node array may move
 * while building) for output gradient `gy` (shape of n->out). For each k
 * with want[k], gin[k] becomes d loss / d n->in[k] restricted to this use,
 * with the shape and dtype of n->in[k]; other entries are set to -1. New
 * nodes take g->cur_loc and g->cur_scope, which the caller sets. */
void grad_rule_apply(Graph *g, const Node *n, ValueId gy, const bool *want, ValueId *gin);

#endif
