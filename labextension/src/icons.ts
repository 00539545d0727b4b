import { LabIcon } from '@jupyterlab/ui-components';

import flaskSvg from '../style/icons/flask.svg';

/** nbmlops' flask: the Experiments panel's tab and the cell toolbar's %%track toggle alike. */
export const experimentsIcon = new LabIcon({ name: 'nbmlops:experiments', svgstr: flaskSvg });

/** The cell toolbar's %%track toggle: the panel's flask, so a tracked cell and its runs read as one thing. */
export const trackIcon = experimentsIcon;
