// texts.js: training texts the suites share.

// A style far from TinyStories (stories260K's training text): terse ship's-log entries with recurring names and phrases.
export const LOG = [
  'Log of the Blue Heron, day one. Wind from the north, steady. Captain Mara checked the ropes twice. The crew ate fish and bread.',
  'Log of the Blue Heron, day two. Wind from the east, light. Captain Mara checked the map twice. The crew mended the sail.',
  'Log of the Blue Heron, day three. Rain at dawn, then sun. Captain Mara checked the ropes twice. The crew ate fish and bread.',
  'Log of the Blue Heron, day four. Wind from the south, strong. Captain Mara checked the map twice. The crew sang at night.',
  'Log of the Blue Heron, day five. Fog in the morning. Captain Mara checked the ropes twice. The crew ate fish and bread.',
  'Log of the Blue Heron, day six. Wind from the west, steady. Captain Mara checked the map twice. The crew mended the sail.',
  'Log of the Blue Heron, day seven. Calm sea, warm sun. Captain Mara checked the ropes twice. The crew sang at night.',
  'Log of the Blue Heron, day eight. Wind from the north, light. Captain Mara checked the map twice. The crew ate fish and bread.',
];
