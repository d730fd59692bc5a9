// What more than one view reads: the served models and the open chat session.
//
// Each view keeps its own state to itself; only these two cross views. The
// model list feeds the chat's picker, the spec sheet's picker and the sampling
// controls (a model's engine); the open session is the chat's and the session
// list's.

export const state = {
  models: [], // GET /api/models
  current: null, // the open session (GET /api/sessions/{id}); null for a new, unsaved chat
};

/** The served model with this id, or undefined. */
export const modelById = (id) => state.models.find((m) => m.id === id);
