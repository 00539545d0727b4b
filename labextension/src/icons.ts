import { LabIcon } from '@jupyterlab/ui-components';

import flaskSvg from '../style/icons/flask.svg';
import trackSvg from '../style/icons/track.svg';

/** The Experiments panel's tab. */
export const experimentsIcon = new LabIcon({ name: 'nbmlops:experiments', svgstr: flaskSvg });

/** The cell toolbar's %%track toggle. */
export const trackIcon = new LabIcon({ name: 'nbmlops:track', svgstr: trackSvg });
